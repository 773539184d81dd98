"""plum-controller: desired state for the fleet, served with Plum's deployment API."""

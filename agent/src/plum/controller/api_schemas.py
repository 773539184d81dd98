"""The bodies of the node, assignment, instance, app and service routes: what handlers check requests
with (``BODY.check(...)``) and what the OpenAPI document says they take and answer."""

from __future__ import annotations

from plum.common.vocab import NODE_ID_PATTERN, PROTOCOLS, ControllerDesired
from plum.controller import validation as v
from plum.controller.apps import APP_NAME_RE, VERSION_RE
from plum.controller.deployments import DESIRED, PHASES
from plum.controller.schema import Array, Bool, Custom, Int, Map, Num, Obj, OneOf, Raw, Str

PORT_NUMBER = Int(minimum=1, maximum=65535)
IMAGE_REPO_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5})?(?:/[a-z0-9][a-z0-9._-]*)*"
IMAGE_TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
MAX_ENDPOINTS = 256

# -- shared values ------------------------------------------------------------------------------

LABELS = Custom(
    like=Map(values=Str(max_length=v.MAX_LABEL_VALUE), key_pattern=v.LABEL_KEY_PATTERN, max_entries=v.MAX_LABELS),
    parse=v.label_map,
    example={"zone": "a"},
)
NODE_ID = Custom(
    like=Str(pattern=NODE_ID_PATTERN, max_length=63),
    parse=v.node_id,
    empty_is_absent=True,
    example="n1",
)
INSTANCE_ID = Str(pattern=v.ID_PATTERN, what="an instance id", nonempty=True, max_length=128)
HOST = Str(max_length=253, description="an IP address or a host name")
PROTOCOL = Str(enum=PROTOCOLS)
PHASE = Str(enum=PHASES)
TEXT = Str()
UNIX_SECONDS = Int(description="unix seconds, controller clock")

ERROR = Obj(
    name="Error",
    props={"error": Str(description="what is wrong, naming the value"), "field": Str(description="the field path")},
    required=("error",),
    extra=True,
    description="every error answer; other keys name what the error is about (nodeId, deploymentId, path...)",
)
PLAIN_TEXT = Raw(media="text/plain")
EVENT_STREAM = Raw(media="text/event-stream")
ZIP = Raw(media="application/zip", schema={"type": "string", "format": "binary"})
UPLOAD_FORM = Raw(
    media="multipart/form-data",
    schema={"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]},
)
ANY_OBJECT = Raw(media="application/json", schema={"type": "object"})

# -- nodes --------------------------------------------------------------------------------------

HEARTBEAT = Obj(
    name="Heartbeat",
    props={
        "nodeId": NODE_ID,
        "ip": Str(max_length=253, description="an IP address or a host name; absent: the connection's peer"),
        "labels": Custom(like=LABELS.like, parse=v.label_map, description="replace the node's labels; absent: kept"),
    },
    required=("nodeId",),
    extra=True,
)
HEARTBEAT_REPLY = Obj(
    name="HeartbeatReply",
    props={"ttlSec": Num(example=15), "heartbeatIntervalSec": Num(example=5)},
    required=("ttlSec", "heartbeatIntervalSec"),
)
JOIN_REPLY = Obj(
    name="JoinReply",
    props={"nodeId": TEXT, "nodeToken": Str(description="shown once"), "controllerId": TEXT},
    required=("nodeId", "nodeToken", "controllerId"),
)
NODE = Obj(
    name="Node",
    props={
        "nodeId": TEXT,
        "ip": TEXT,
        "labels": Map(values=TEXT),
        "lastSeen": UNIX_SECONDS,
        "health": Str(enum=("Healthy", "Unhealthy")),
    },
    required=("nodeId", "ip", "labels", "lastSeen", "health"),
)

# -- assignments and instances ------------------------------------------------------------------

DESIRED_PATCH = Obj(name="DesiredPatch", props={"desired": Str(enum=DESIRED)}, required=("desired",))
PUBLISHED_PORT = Obj(
    name="Port",
    props={
        "container": PORT_NUMBER,
        "protocol": Str(enum=("tcp", "udp")),
        "host": Int(minimum=0, maximum=65535, description="absent: Docker picks a free host port"),
        "hostIp": Str(description="absent: the agent's PLUM_PUBLISH_HOST"),
    },
    required=("container",),
)
_ASSIGNMENT = {
    "instanceId": TEXT,
    "deploymentId": TEXT,
    "nodeId": TEXT,
    "desired": Str(enum=tuple(d.value for d in ControllerDesired)),
    "artifactUrl": TEXT,
    "startCmd": TEXT,
    "appName": TEXT,
    "appVersion": TEXT,
    "artifactType": Str(enum=("zip", "image")),
    "imageRepository": TEXT,
    "imageTag": TEXT,
    "portMappings": Str(description="JSON text"),
    "phase": Str(description="last reported phase, empty before the first report"),
    "healthy": Bool(),
    "lastReportAt": UNIX_SECONDS,
    "message": TEXT,
    "exitCode": Int(nullable=True),
    "restarts": Int(),
}
DEPLOYMENT_INSTANCE = Obj(name="DeploymentInstance", props=_ASSIGNMENT, required=tuple(_ASSIGNMENT))
_ASSIGNMENT_WITH_SETTINGS = {
    **_ASSIGNMENT,
    "artifactSha256": TEXT,
    "runtime": TEXT,
    "image": TEXT,
    "env": Map(values=TEXT),
    "memory": TEXT,
    "memoryBytes": Int(nullable=True),
    "cpus": Num(nullable=True),
    "networkMode": TEXT,
    "restartPolicy": TEXT,
    "ports": Array(items=PUBLISHED_PORT),
}
ASSIGNMENT = Obj(name="Assignment", props=_ASSIGNMENT_WITH_SETTINGS, required=tuple(_ASSIGNMENT_WITH_SETTINGS))
ASSIGNMENT_FEED = Obj(
    name="AssignmentFeed",
    props={
        "items": Array(items=ASSIGNMENT),
        "removed": Array(
            items=TEXT,
            description="instance ids of this node the controller removed or failover replaced: the only ones an "
            "agent removes; one missing from items and removed keeps running",
        ),
        "controllerId": Str(
            description="the database's identity (a UUID); agents hold their instances when it changes"
        ),
    },
    required=("items", "removed", "controllerId"),
)
INSTANCE_STATUS = Obj(
    name="InstanceStatus",
    props={
        "instanceId": INSTANCE_ID,
        "phase": PHASE,
        "healthy": Bool(description="absent: false when Failed or BackOff"),
        "message": Str(max_length=2000),
        "exitCode": Int(minimum=-1_000_000, maximum=1_000_000),
        "restarts": Int(minimum=0, maximum=1_000_000_000),
        "tsUnix": Num(minimum=0, maximum=1e11),
    },
    required=("instanceId", "phase"),
    extra=True,
)
_STATUS = {
    "phase": PHASE,
    "healthy": Bool(),
    "message": TEXT,
    "exitCode": Int(nullable=True),
    "restarts": Int(),
    "tsUnix": Num(nullable=True),
    "receivedAt": Num(),
}
STATUS_HISTORY = Obj(
    name="StatusHistory",
    props={"instanceId": TEXT, "items": Array(items=Obj(props=_STATUS, required=tuple(_STATUS)))},
    required=("instanceId", "items"),
)

# -- apps ---------------------------------------------------------------------------------------

PORT_MAPPING = Obj(
    name="PortMapping",
    props={
        "container": PORT_NUMBER,
        "host": PORT_NUMBER,
        "serviceName": Str(max_length=128),
        "protocol": Str(enum=PROTOCOLS, default="tcp"),
    },
    required=("container",),
    description="Plum's port mapping of an image app",
)
IMAGE_APP = Obj(
    name="ImageApp",
    props={
        "name": Str(pattern=APP_NAME_RE.pattern, what="letters, digits, '_', '.', '-'", nonempty=True),
        "version": Str(pattern=VERSION_RE.pattern, what="letters, digits, '_', '.', '+', '-'", nonempty=True),
        "imageRepository": Str(pattern=IMAGE_REPO_PATTERN, what="a Docker repository", nonempty=True),
        "imageTag": Str(pattern=IMAGE_TAG_PATTERN, what="a Docker tag", default="latest"),
        "portMappings": Array(items=PORT_MAPPING, what="{host, container, serviceName?, protocol?}"),
    },
    required=("name", "version", "imageRepository"),
    example={"name": "web", "version": "1.0.0", "imageRepository": "nginx", "imageTag": "1.27"},
)
_APP = {
    "artifactId": TEXT,
    "name": TEXT,
    "version": TEXT,
    "url": Str(description="/artifacts/<file> for a zip, empty for an image app"),
    "sha256": TEXT,
    "sizeBytes": Int(),
    "createdAt": UNIX_SECONDS,
    "type": Str(enum=("zip", "image")),
    "services": Array(
        items=Obj(props={"name": TEXT, "protocol": TEXT, "port": Int()}, required=("name", "protocol", "port"))
    ),
    "imageRepository": Str(description="image apps only"),
    "imageTag": Str(description="image apps only"),
    "portMappings": Str(description="image apps only: JSON text, as Plum stores it"),
}
APP = Obj(name="App", props=_APP, required=tuple(list(_APP)[:9]))
DOCKER_IMAGE = Obj(
    name="DockerImage",
    props={"repository": TEXT, "tag": TEXT, "id": TEXT, "size": TEXT, "created": TEXT},
    required=("repository", "tag", "id", "size", "created"),
)

# -- services -----------------------------------------------------------------------------------

SERVICE_NAME = Str(max_length=128, nonempty=True)
ENDPOINT_SPEC = Obj(
    name="EndpointSpec",
    props={
        "serviceName": SERVICE_NAME,
        "port": PORT_NUMBER,
        "protocol": Str(enum=PROTOCOLS, default="http"),
        "version": Str(max_length=64),
        "labels": LABELS,
    },
    required=("serviceName", "port"),
)
SERVICE_REGISTER = Obj(
    name="ServiceRegister",
    props={
        "instanceId": INSTANCE_ID,
        "nodeId": Custom(like=NODE_ID.like, parse=v.node_id, empty_is_absent=True, default="manual"),
        "ip": Str(max_length=253, nonempty=True, description="an IP address or a host name"),
        "endpoints": Array(items=ENDPOINT_SPEC, max_items=MAX_ENDPOINTS, what="endpoints"),
    },
    required=("instanceId", "ip", "endpoints"),
    extra=True,
)
SERVICE_HEARTBEAT = Obj(
    name="ServiceHeartbeat",
    props={
        "instanceId": INSTANCE_ID,
        "health": Array(
            items=Obj(
                props={"serviceName": SERVICE_NAME, "port": PORT_NUMBER, "healthy": Bool()},
                required=("serviceName", "healthy"),
                extra=True,
            ),
            what="{serviceName, port?, healthy}",
        ),
    },
    required=("instanceId",),
    extra=True,
)
_ENDPOINT = {
    "serviceName": TEXT,
    "instanceId": TEXT,
    "nodeId": TEXT,
    "ip": TEXT,
    "port": Int(),
    "protocol": TEXT,
    "version": TEXT,
    "labels": Map(values=TEXT),
    "healthy": Bool(),
    "lastSeen": UNIX_SECONDS,
}
ENDPOINT = Obj(name="Endpoint", props=_ENDPOINT, required=tuple(_ENDPOINT))
# The endpoint object as discovery lists it (what Plum's clients send back); lastSeen is accepted and ignored.
ENDPOINT_PUT = Obj(
    name="EndpointPut",
    props={
        **ENDPOINT_SPEC.props,
        "instanceId": INSTANCE_ID,
        "ip": Str(max_length=253, nonempty=True, description="an IP address or a host name"),
        "nodeId": Custom(like=NODE_ID.like, parse=v.node_id, empty_is_absent=True, default="manual"),
        "healthy": Bool(),
        "lastSeen": Num(description="ignored: the registry sets it"),
    },
    required=("serviceName", "port", "instanceId", "ip"),
)
ENDPOINT_PATCH = Obj(
    name="EndpointPatch",
    props={
        "healthy": Bool(),
        "version": Str(max_length=64, keep_empty=True),
        "labels": LABELS,
        **{
            key: OneOf(options=(Str(), Int()), description="identity: may come along, must match the endpoint")
            for key in ("serviceName", "instanceId", "nodeId", "ip", "port", "protocol")
        },
        "lastSeen": Num(description="ignored: the registry sets it"),
    },
    description="Plum's UI sends the whole endpoint object back: its identity fields must match",
)
SERVICE_NAMES = Array(items=TEXT)

"""JSON schemas of the custom resources deploy/k8s uses, written from their documented fields.

kubernetes-validate only knows built-in kinds. These cover KEDA's `ScaledObject` and
`TriggerAuthentication` (keda.sh/v1alpha1, KEDA 2.x "ScaledObject specification" and
"rabbitmq queue" scaler pages) and the RabbitMQ cluster operator's `RabbitmqCluster`
(rabbitmq.com/v1beta1). Every object is closed (`additionalProperties: false`), so a
misspelt or invented field fails; nested Kubernetes types (`HorizontalPodAutoscalerBehavior`,
`ResourceRequirements`, ...) are checked against the real Kubernetes definitions.
"""

from __future__ import annotations

import json
from typing import Any

import importlib_resources
import jsonschema
from referencing import Registry, Resource

K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"


def _k8s(name: str) -> dict[str, Any]:
    return {"$ref": K8S_DEFS + name}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NONNEG = {"type": "integer", "minimum": 0}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}
# KEDA reads trigger values as strings, even numbers ("100", "100.5").
_NUMBER_TEXT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _k8s("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    )


RABBITMQ_TRIGGER_METADATA = _closed(
    {
        "host": _STR,
        "hostFromEnv": _STR,
        "protocol": {"enum": ["auto", "amqp", "http"]},
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": _NUMBER_TEXT,
        "activationValue": _NUMBER_TEXT,
        "queueName": _STR,
        "vhostName": _STR,
        "useRegex": {"enum": ["true", "false"]},
        "excludeUnacknowledged": {"enum": ["true", "false"]},
        "pageSize": _NUMBER_TEXT,
        "operation": {"enum": ["sum", "max", "avg"]},
        "timeout": _NUMBER_TEXT,
        "unsafeSsl": {"enum": ["true", "false"]},
    },
    required=("queueName", "mode", "value"),
)

TRIGGER = {
    **_closed(
        {
            "type": _STR,
            "name": _STR,
            "metadata": {"type": "object", "additionalProperties": _STR},
            "authenticationRef": _closed(
                {"name": _STR, "kind": {"enum": ["TriggerAuthentication",
                                                 "ClusterTriggerAuthentication"]}},
                required=("name",),
            ),
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            "useCachedMetrics": _BOOL,
        },
        required=("type", "metadata"),
    ),
    "if": {"properties": {"type": {"const": "rabbitmq"}}},
    "then": {"properties": {"metadata": RABBITMQ_TRIGGER_METADATA}},
}

SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    _closed(
        {
            "scaleTargetRef": _closed(
                {"apiVersion": _STR, "kind": _STR, "name": _STR, "envSourceContainerName": _STR},
                required=("name",),
            ),
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": _NONNEG,
            "initialCooldownPeriod": _NONNEG,
            "idleReplicaCount": _NONNEG,
            "minReplicaCount": _NONNEG,
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "fallback": _closed(
                {
                    "failureThreshold": _NONNEG,
                    "replicas": _NONNEG,
                    "behavior": {"enum": ["static", "currentReplicas",
                                          "currentReplicasIfHigher", "currentReplicasIfLower"]},
                },
                required=("failureThreshold", "replicas"),
            ),
            "advanced": _closed(
                {
                    "restoreToOriginalReplicaCount": _BOOL,
                    "horizontalPodAutoscalerConfig": _closed(
                        {
                            "name": _STR,
                            "behavior": _k8s(
                                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"
                            ),
                        }
                    ),
                    "scalingModifiers": _closed(
                        {"formula": _STR, "target": _STR, "activationTarget": _STR,
                         "metricType": {"enum": ["AverageValue", "Value"]}}
                    ),
                }
            ),
            "triggers": {"type": "array", "minItems": 1, "items": TRIGGER},
        },
        required=("scaleTargetRef", "triggers"),
    ),
)

_TARGET_REF = _closed({"parameter": _STR, "name": _STR, "key": _STR},
                      required=("parameter", "name", "key"))

TRIGGER_AUTHENTICATION = _resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    _closed(
        {
            "secretTargetRef": {"type": "array", "items": _TARGET_REF},
            "configMapTargetRef": {"type": "array", "items": _TARGET_REF},
            "env": {"type": "array", "items": _closed(
                {"parameter": _STR, "name": _STR, "containerName": _STR},
                required=("parameter", "name"),
            )},
            "podIdentity": _closed({"provider": _STR, "identityId": _STR,
                                    "identityOwner": _STR, "roleArn": _STR}, ("provider",)),
            "hashiCorpVault": _OBJ,
            "azureKeyVault": _OBJ,
            "awsSecretManager": _OBJ,
            "gcpSecretManager": _OBJ,
            "boundServiceAccountToken": {"type": "array"},
        }
    ),
)

RABBITMQ_CLUSTER = _resource(
    "rabbitmq.com/v1beta1",
    "RabbitmqCluster",
    _closed(
        {
            "replicas": {"type": "integer", "minimum": 0},
            "image": _STR,
            "imagePullSecrets": {"type": "array", "items": _k8s(
                "io.k8s.api.core.v1.LocalObjectReference")},
            "service": _closed({
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "annotations": {"type": "object", "additionalProperties": _STR},
                "ipFamilyPolicy": {"enum": ["SingleStack", "PreferDualStack",
                                            "RequireDualStack"]},
            }),
            "persistence": _closed({
                "storageClassName": _STR,
                "storage": _k8s("io.k8s.apimachinery.pkg.api.resource.Quantity"),
            }),
            "resources": _k8s("io.k8s.api.core.v1.ResourceRequirements"),
            "affinity": _k8s("io.k8s.api.core.v1.Affinity"),
            "tolerations": {"type": "array", "items": _k8s("io.k8s.api.core.v1.Toleration")},
            "rabbitmq": _closed({
                "additionalConfig": {"type": "string", "maxLength": 100000},
                "advancedConfig": _STR,
                "envConfig": _STR,
                "erlangInetConfig": _STR,
                "additionalPlugins": {"type": "array", "items": _STR},
            }),
            "tls": _closed({"secretName": _STR, "caSecretName": _STR,
                            "disableNonTLSListeners": _BOOL}),
            "override": _closed({"statefulSet": _OBJ, "service": _OBJ}),
            "skipPostDeployInitializing": _BOOL,
            "terminationGracePeriodSeconds": _NONNEG,
            "delayStartSeconds": _NONNEG,
            "autoEnableAllFeatureFlags": _BOOL,
            "secretBackend": _closed({"vault": _OBJ, "externalSecret": _closed({"name": _STR})}),
        }
    ),
)

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): RABBITMQ_CLUSTER,
}


def kubernetes_definitions(version: str) -> Registry:
    """A schema registry holding kubernetes-validate's bundled definitions for `version`."""
    path = importlib_resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json"
    )
    return Resource.from_contents(json.loads(path.read_text())) @ Registry()


def custom_resource_errors(manifest: dict[str, Any], registry: Registry) -> list[str]:
    """Schema violations of one custom resource, as readable lines (empty: valid)."""
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    schema = SCHEMAS.get(key)
    if schema is None:
        return [f"no schema for {key[1]} {key[0]}"]
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]

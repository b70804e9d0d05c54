"""``GET /openapi.json``: OpenAPI 3.1 built from the served routes and the manifest JSON Schemas.

The schemas of schemas/ are included as components (Upstream, Check, AccessNode, Group, User,
Defs) with their cross-file ``$ref``s turned into component references; API-only bodies
(a node, a user with ``password``, tokens, status) are defined here on top of them.
"""

from __future__ import annotations

import re
from typing import Any

from reconciler.api.routes import Route
from reconciler.manifest.schemas import schemas
from reconciler.passwords import MAX_LENGTH, MIN_LENGTH

COMPONENT = "#/components/schemas/"
FILES = {
    "defs.schema.json": "Defs",
    "upstream.schema.json": "Upstream",
    "check.schema.json": "Check",
    "accessnode.schema.json": "AccessNode",
    "group.schema.json": "Group",
    "user.schema.json": "User",
    "manifest.schema.json": "Manifest",
}


def _translate(value: Any, component: str) -> Any:
    """A schema of schemas/ as a component: cross-file $refs become component refs."""
    if isinstance(value, list):
        return [_translate(v, component) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("$id", "$schema"):
            continue
        if key == "$ref" and isinstance(item, str):
            file, _, fragment = item.partition("#")
            target = FILES[file] if file else component
            out[key] = COMPONENT + target + fragment
        else:
            out[key] = _translate(item, component)
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": COMPONENT + name}


def _api_schemas(manifest: dict[str, Any]) -> dict[str, Any]:
    user_props = {k: v for k, v in manifest["User"]["properties"].items() if k != "password_hash"}
    password = {"type": "string", "minLength": MIN_LENGTH, "maxLength": MAX_LENGTH}
    node_fields = {k: v for k, v in manifest["Upstream"]["$defs"]["node"].items() if k != "required"}
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "detail": {}}}
    return {
        "Name": _ref("Defs/$defs/name"),
        "Object": {"type": "object"},
        "Error": error,
        "Node": _ref("Upstream/$defs/node"),
        "NodeFields": node_fields,
        "AclRule": _ref("Upstream/$defs/aclRule"),
        "AclRuleFields": {
            "type": "object",
            "required": ["rule"],
            "additionalProperties": False,
            "properties": {
                "rule": {"enum": ["WRITE", "READ", "DENY"]},
                "group_name": _ref("Defs/$defs/name"),
            },
        },
        "UserView": {"type": "object", "additionalProperties": False, "properties": user_props},
        "UserCreate": {
            "type": "object",
            "required": ["name", "password", "groups"],
            "additionalProperties": False,
            "properties": {**user_props, "password": password},
        },
        "UserPatch": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "password": password,
                "old_password": {"type": "string", "maxLength": 1024},
                "full_name": user_props["full_name"],
                "enabled": {"type": "boolean"},
                "groups": user_props["groups"],
            },
        },
        "AuthRequest": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["user_name", "password"],
                    "additionalProperties": False,
                    "properties": {"user_name": {"type": "string"}, "password": {"type": "string"}},
                },
                {"$ref": COMPONENT + "TokenOnly"},
            ]
        },
        "TokenOnly": {
            "type": "object",
            "required": ["token"],
            "additionalProperties": False,
            "properties": {"token": {"type": "string"}},
        },
        "Token": {
            "type": "object",
            "required": ["token", "token_expiration"],
            "properties": {"token": {"type": "string"}, "token_expiration": {"type": "string"}},
        },
        "Served": {
            "type": "object",
            "required": ["access_node", "upstream"],
            "properties": {"access_node": {"type": "string"}, "upstream": {"type": "string"}},
        },
        "ManagementNode": {"type": "object", "required": ["host_name", "master"]},
        **_reading_schemas(),
        "Status": {
            "type": "object",
            "required": ["master_node", "etcd_health", "revision", "access_nodes", "backends", "panic"],
            "properties": {
                "revision": {"type": "integer"},
                "access_nodes": {"type": "object", "required": ["total", "converged", "failed"]},
                "backends": {"type": "object", "required": ["total", "up", "down"]},
                "panic": {"type": "array"},
                "refused_upstreams": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _reading_schemas() -> dict[str, Any]:
    """The answers of GET /health, /upstream/{name}/health, /deploy and /audit (the dashboard's reads)."""
    number = {"type": ["number", "null"]}
    check = {
        "type": "object",
        "required": ["check", "status", "detail", "seconds", "checked", "since"],
        "properties": {
            "check": {"type": "string"},
            "status": {"enum": ["up", "down"]},
            "detail": {"type": "string"},
            "seconds": number,
            "checked": number,
            "since": number,
        },
    }
    backend = {
        "type": "object",
        "required": ["hostname", "health", "role", "force_status", "failover", "checks"],
        "properties": {
            "hostname": {"type": "string"},
            "health": {"enum": ["up", "down", "drained", "forced"]},
            "role": {"enum": ["enabled", "backup", "down"]},
            "force_status": {"enum": ["up", "down", "normal"]},
            "failover": {"type": "integer"},
            "weight": {"type": "integer"},
            "since": number,
            "detail": {"type": "string"},
            "seconds": number,
            "checked": number,
            "checks": {"type": "array", "items": check},
        },
    }
    page = {"type": ["integer", "null"], "description": "pass as `before` for the next page; null: the last page"}
    deploy = {
        "type": "object",
        "required": ["access_node", "revision", "result", "when", "by", "seconds"],
        "properties": {
            "seq": {"type": ["integer", "null"]},
            "access_node": {"type": "string"},
            "revision": {"type": "integer"},
            "result": {"type": "string"},
            "step": {"type": "string"},
            "error": {"type": "string"},
            "when": {"type": "number"},
            "by": {"type": "string"},
            "seconds": {"type": "number"},
            "files": {"type": "integer"},
        },
    }
    audit = {
        "type": "object",
        "required": ["seq", "revision", "kind", "name", "action", "source", "origin", "when"],
        "properties": {
            "seq": {"type": "integer"},
            "revision": {"type": "integer"},
            "kind": {"type": "string"},
            "name": {"type": "string"},
            "action": {"enum": ["put", "delete"]},
            "source": {"enum": ["manifest", "api"]},
            "origin": {"type": "string", "description": "the manifest file, or the API user"},
            "when": {"type": "number"},
        },
    }
    return {
        "UpstreamHealth": {
            "type": "object",
            "required": ["name", "min_servers", "panic", "tiers_in_use", "access", "backends"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": ["string", "null"]},
                "owner": {"type": "string"},
                "min_servers": {"type": "integer"},
                "checks": {"type": "array", "items": {"type": "string"}},
                "panic": {"type": "boolean"},
                "tiers_in_use": {"type": "array", "items": {"type": "integer"}},
                "access": {"enum": ["read", "write"]},
                "backends": {"type": "array", "items": backend},
                "refused": {
                    "type": "array",
                    "description": "access nodes on which the renderer refuses the upstream (its files kept as they are live)",
                    "items": {
                        "type": "object",
                        "required": ["access_node", "message"],
                        "properties": {
                            "access_node": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                            "value": {"type": "string"},
                            "paths": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        },
        "HealthPage": {
            "type": "object",
            "required": ["revision", "total", "offset", "limit", "counts", "upstreams"],
            "properties": {
                "revision": {"type": "integer"},
                "total": {"type": "integer"},
                "offset": {"type": "integer"},
                "limit": {"type": "integer"},
                "counts": {"type": "object"},
                "upstreams": {"type": "array", "items": _ref("UpstreamHealth")},
            },
        },
        "DeployPage": {
            "type": "object",
            "required": ["entries", "next"],
            "properties": {"entries": {"type": "array", "items": deploy}, "next": page},
        },
        "AuditPage": {
            "type": "object",
            "required": ["entries", "next"],
            "properties": {"entries": {"type": "array", "items": audit}, "next": page},
        },
    }


def _content(schema: str) -> dict[str, Any]:
    if schema == "text":
        return {"text/plain": {"schema": {"type": "string"}}}
    if schema == "html":  # the dashboard's page and files (reconciler/api/ui.py)
        return {"text/html": {"schema": {"type": "string"}}}
    if schema.startswith("["):
        return {"application/json": {"schema": {"type": "array", "items": _ref(schema[1:-1])}}}
    return {"application/json": {"schema": _ref(schema)}}


_PARAM_SCHEMAS = {"hostname": "Defs/$defs/hostname", "host_name": "Defs/$defs/hostname"}


def _operation(route: Route) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "done"}
    if route.response and route.status != 204:
        success["content"] = _content(route.response)
    responses: dict[str, Any] = {str(route.status): success}
    statuses = set(route.errors) | ({400, 413} if route.body else set()) | ({401} if not route.public else set())
    statuses.add(503)  # the store cannot be used (etcd down): docs/api.md
    for status in sorted(statuses):
        responses[str(status)] = {"description": "error", "content": _content("Error")}
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z]+', '_', route.path).strip('_') or 'root'}",
        "responses": responses,
    }
    params = re.findall(r"\{(\w+)\}", route.path)
    if params:
        operation["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": _ref(_PARAM_SCHEMAS.get(p, "Defs/$defs/name"))}
            for p in params
        ]
    if route.query:
        operation.setdefault("parameters", []).extend(
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}} for name, kind in route.query
        )
    if route.body:
        operation["requestBody"] = {"required": route.method != "DELETE", "content": _content(route.body)}
    if not route.public:
        operation["security"] = [{"token": []}]
    return operation


def openapi_document(routes: tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (create_app's ``ALL_ROUTES``: what is served)."""
    manifest = {
        FILES[f]: {**_translate(doc, FILES[f]), "x-schema-file": f"schemas/{f}", "x-schema-id": doc.get("$id")}
        for f, doc in schemas().items()
        if f in FILES
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenBalancer REST API (obreconcile serve)",
            "version": "1",
            "description": "SPEC.md §4. Schemas are the manifest JSON Schemas of schemas/ (https://openbalancer.dev/schemas/v1/).",
        },
        "paths": paths,
        "components": {
            "schemas": {**manifest, **_api_schemas(manifest)},
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
        },
    }

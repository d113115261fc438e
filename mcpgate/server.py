"""Gatehouse's own MCP server at /mcp: what the REST API does for proposals, as MCP tools.

Tools, for the calling service (its API key):
- `list_action_types` — the types it may propose, with their payload schemas;
- `propose.<action type>` — one per type, the type's payload schema as the `payload` input;
- `propose_action` — any of them by key (the payload schema chosen by `action_type`);
- `get_proposal` — one of its proposals, optionally waiting for the decision.
Proposals go through approvals' own submit: the same rules, queue, audit and callbacks as
POST /api/v1/proposals.
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

import mcp_types as types
import orjson
from django.conf import settings
from mcp.server import Server, ServerRequestContext
from pydantic import ValidationError

from approvals import selectors, services, waits
from approvals.api import ProposalIn
from approvals.models import ActionType, Service
from approvals.representation import action_type_representation, proposal_representation
from foundation import problems
from foundation.errors import ApplicationError
from mcpgate import db
from mcpgate.caller import caller_of, tool_error
from mcpgate.models import Call

PROPOSE_PREFIX = "propose."
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,119}$")
_COMMON = {
    "confidence": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "How sure the model is that this action is right, from 0 to 1.",
    },
    "summary": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "description": "One line a reviewer reads first.",
    },
    "rationale": {"type": "string", "maxLength": 20000, "description": "Why, in a few sentences."},
    "external_id": {"type": "string", "maxLength": 200, "description": "Your own reference."},
    "idempotency_key": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "description": "Retry with the same key to get the first answer instead of a second "
        "proposal.",
    },
}
_READ_ONLY = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
_PROPOSES = types.ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_has_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(v) for v in schema)
    return False


def _describe(action_type: ActionType) -> str:
    traits = [f"risk {action_type.risk}"]
    if action_type.irreversible:
        traits.append("irreversible")
    if action_type.approvals_required > 1:
        traits.append(f"needs {action_type.approvals_required} reviewers")
    text = f"Propose {action_type.key}: {action_type.title} ({', '.join(traits)})."
    if action_type.description:
        text += f"\n{action_type.description}"
    return text + (
        "\nGatehouse's rules decide at once or send it to a reviewer; the answer is the "
        "proposal with its state and decision. Follow a pending one with get_proposal."
    )


def _propose_tool(action_type: ActionType) -> types.Tool:
    """One type's tool: its payload schema is the `payload` input, as it is stored."""
    schema = copy.deepcopy(action_type.payload_schema) or {"type": "object"}
    root: dict[str, Any] = {"type": "object", "additionalProperties": False}
    # References inside the payload schema point at its own root: keep them resolvable.
    for keyword in ("$defs", "definitions"):
        if keyword in schema:
            root[keyword] = schema.pop(keyword)
    root["properties"] = {"payload": schema, **_COMMON}
    root["required"] = ["payload", "confidence", "summary"]
    return types.Tool(
        name=PROPOSE_PREFIX + action_type.key,
        title=f"Propose: {action_type.title}",
        description=_describe(action_type),
        input_schema=root,
        annotations=_PROPOSES,
    )


def _propose_any_tool(action_types: list[ActionType]) -> types.Tool:
    """propose_action: the payload's schema follows the chosen action type."""
    keys = [t.key for t in action_types]
    conditions = [
        {
            "if": {"properties": {"action_type": {"const": t.key}}, "required": ["action_type"]},
            "then": {"properties": {"payload": t.payload_schema}},
        }
        for t in action_types
        if not _has_ref(t.payload_schema)
    ]
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "action_type": {"type": "string", "enum": keys},
            "payload": {"type": "object", "description": "Must match the action type's schema."},
            **_COMMON,
        },
        "required": ["action_type", "payload", "confidence", "summary"],
    }
    if conditions:
        schema["allOf"] = conditions
    listing = "\n".join(f"- {t.key}: {t.title}" for t in action_types) or "- (none allowed)"
    return types.Tool(
        name="propose_action",
        title="Propose an action",
        description="Propose an action for Gatehouse to decide (by rule or by a reviewer). "
        f"Action types you may propose:\n{listing}",
        input_schema=schema,
        annotations=_PROPOSES,
    )


def _static_tools() -> list[types.Tool]:
    return [
        types.Tool(
            name="list_action_types",
            title="List action types",
            description="The action types you may propose, with the JSON Schema of each payload, "
            "whether it is irreversible, its risk and its executor.",
            input_schema={"type": "object", "properties": {}, "additionalProperties": False},
            annotations=_READ_ONLY,
        ),
        types.Tool(
            name="get_proposal",
            title="Get a proposal",
            description="One of your proposals: its state, decision (with the reviewer's reason) "
            "and, for a gateway call, the upstream's result. wait_seconds holds the answer until "
            f"it is decided (at most {settings.LONG_POLL_MAX_SECONDS} s).",
            input_schema={
                "type": "object",
                "additionalProperties": False,
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "wait_seconds": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": settings.LONG_POLL_MAX_SECONDS,
                    },
                },
            },
            annotations=_READ_ONLY,
        ),
    ]


def _proposable(service: Service) -> list[ActionType]:
    # A gateway's tool types are proposed by calling the tool on the gateway.
    return [
        t
        for t in selectors.action_types_for_service(service=service)
        if not t.key.startswith("mcp.") and _TOOL_NAME.match(t.key)
    ]


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    service = caller_of(ctx).service
    action_types = await db.run(_proposable, service)
    tools = _static_tools()
    tools.append(_propose_any_tool(action_types))
    tools.extend(_propose_tool(t) for t in action_types)
    return types.ListToolsResult(tools=tools)


def _ok(body: dict[str, Any]) -> types.CallToolResult:
    text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=body)


def _propose(service: Service, arguments: dict[str, Any]) -> dict[str, Any]:
    unstorable = problems.check_storable(arguments)
    if unstorable:
        raise ApplicationError(
            f"The arguments are refused: {unstorable}.", status=400, code="malformed-arguments"
        )
    arguments = dict(arguments)
    key = arguments.pop("idempotency_key", None)
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        raise ApplicationError(
            "idempotency_key must be 1 to 255 characters.",
            status=422,
            code="validation-error",
            errors=[{"loc": ["idempotency_key"], "msg": "1 to 255 characters"}],
        )
    try:
        data = ProposalIn.model_validate(arguments)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise ApplicationError(
            "The proposal is not valid.", status=422, code="validation-error", errors=errors
        ) from None
    result = services.proposal_submit(  # check_storable walked every argument above
        service=service, data=data.model_dump(mode="json"), idempotency_key=key, values_checked=True
    )
    return {**result.response, "replayed": result.replayed}


def _with_gateway_call(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    call = Call.objects.filter(pk=body["id"], proposal__service=service).first()
    if call is not None:
        body["mcp_call"] = {
            "upstream": call.upstream.name,
            "tool": call.tool,
            "arguments": call.arguments,
            "status": call.status,
            "result": call.result,
            "error": call.error or None,
        }
    return body


async def _get_proposal(service: Service, arguments: dict[str, Any]) -> dict[str, Any]:
    raw_id, wait = arguments.get("id"), arguments.get("wait_seconds", 0)
    try:
        proposal_id = uuid.UUID(str(raw_id))
    except ValueError:
        raise ApplicationError(
            "id must be a proposal id (a UUID).",
            status=422,
            code="validation-error",
            errors=[{"loc": ["id"], "msg": "not a UUID"}],
        ) from None
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
        raise ApplicationError(
            "wait_seconds must be a number of seconds, 0 or more.",
            status=422,
            code="validation-error",
            errors=[{"loc": ["wait_seconds"], "msg": "a number, 0 or more"}],
        )

    async def load() -> Any:
        return await db.run(
            selectors.proposal_for_service, service=service, proposal_id=proposal_id
        )

    proposal = await waits.proposal_wait_decided(load=load, wait=float(wait))
    if proposal is None:
        raise ApplicationError("No such proposal for this service.", status=404, code="not-found")
    return await db.run(_with_gateway_call, service, proposal_representation(proposal))


def _action_types(service: Service) -> dict[str, Any]:
    return {
        "action_types": [
            action_type_representation(t)
            for t in selectors.action_types_for_service(service=service)
        ]
    }


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    service = caller_of(ctx).service
    arguments = params.arguments or {}
    try:
        if params.name == "list_action_types":
            return _ok(await db.run(_action_types, service))
        if params.name == "get_proposal":
            return _ok(await _get_proposal(service, arguments))
        if params.name == "propose_action":
            return _ok(await db.run(_propose, service, arguments))
        if params.name.startswith(PROPOSE_PREFIX):
            if not isinstance(arguments, dict) or "action_type" in arguments:
                raise ApplicationError(
                    "This tool proposes one action type; pass payload, confidence and summary.",
                    status=422,
                    code="validation-error",
                    errors=[{"loc": ["action_type"], "msg": "not an input of this tool"}],
                )
            key = params.name.removeprefix(PROPOSE_PREFIX)
            return _ok(await db.run(_propose, service, {**arguments, "action_type": key}))
    except ApplicationError as exc:
        return tool_error(exc.message, code=exc.code, errors=exc.errors)
    return tool_error(f"There is no tool {params.name!r}.", code="unknown-tool")


def build() -> Server[Any]:
    return Server(
        "gatehouse",
        title="Gatehouse",
        instructions="Propose actions for Gatehouse to decide: its rules decide at once or a "
        "reviewer does. Never assume a proposal is approved until its state says so.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=lambda name: None,
    )

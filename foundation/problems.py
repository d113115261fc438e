"""problem+json for a ninja API (every error it can raise, and its OpenAPI document), and a JSON
body parser that refuses what it cannot store. The response itself is `foundation.errors.problem`."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.errors import _default_exception as ninja_default_exception
from ninja.parser import Parser

from foundation import jsonvalues
from foundation.errors import ApplicationError, problem
from foundation.unavailable import answer_unavailable


def _clean_loc(loc: Any) -> list[Any]:
    # ninja reports body fields as ["body", "<argument name>", field, …]; callers know
    # only the field names, so drop the argument name.
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "body" and parts[1] == "data":
        parts = ["body", *parts[2:]]
    return parts


def _describe(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"][1:]) or first["loc"][0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def install(api: NinjaAPI) -> None:
    """Map every error the API can raise to one problem+json shape."""

    @api.exception_handler(ApplicationError)
    def application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
        return problem(
            exc.status, exc.code, exc.message, title=exc.title, errors=exc.errors, extra=exc.extra
        )

    @api.exception_handler(ValidationError)
    def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        errors = [
            {"loc": _clean_loc(e.get("loc", [])), "msg": e.get("msg", "invalid")}
            for e in exc.errors
        ]
        return problem(
            422, "validation-error", f"The request is invalid: {_describe(errors)}", errors=errors
        )

    @api.exception_handler(AuthenticationError)
    def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        return problem(
            401,
            "unauthorized",
            "A valid service key is required: send 'Authorization: Bearer gh_<prefix>_<secret>'.",
            headers={"WWW-Authenticate": 'Bearer realm="gatehouse"'},
        )

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        # ninja wraps the body parser's errors; ours carry the precise problem.
        if isinstance(exc.__cause__, ApplicationError):
            return application_error(request, exc.__cause__)
        return problem(exc.status_code, "http-error", str(exc))

    @api.exception_handler(Exception)
    def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        # A database or Redis that is away is a 503 here too (ninja would answer DEBUG's
        # traceback page before Django's middleware saw it); anything else is ninja's.
        return answer_unavailable(request, exc) or ninja_default_exception(request, exc, api)

    @api.exception_handler(RequestDataTooBig)
    def too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return _too_large()


def _too_large() -> HttpResponse:
    limit = settings.API_MAX_BODY_BYTES
    return problem(413, "payload-too-large", f"The request body is larger than {limit} bytes.")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


# What jsonvalues.check refuses can reach a parsed body only through these bytes: a \u escape
# (NUL, a lone surrogate), a NUL byte (UTF-16 and UTF-32 text have them), or a surrogate written
# as UTF-8 (json.loads decodes bytes with surrogatepass); NaN and the infinities the parse
# refuses itself, and no value nests deeper than the body has brackets. A body with none of
# them is not walked: most submits, whose walk was a tenth of the body's handling.
_MAY_HOLD_BAD_VALUES = re.compile(rb"\\u|\x00|\xed[\xa0-\xbf]")


def _may_hold_bad_values(raw: bytes) -> bool:
    return (
        _MAY_HOLD_BAD_VALUES.search(raw) is not None
        or raw.count(b"[") + raw.count(b"{") > jsonvalues.MAX_DEPTH
    )


def check_storable(value: Any) -> str | None:
    """None if a JSON value parsed elsewhere (MCP) can be stored as the API would store it;
    else why not, naming the field (jsonvalues.check)."""
    try:
        jsonvalues.check(value)
    except jsonvalues.BadValue as exc:
        return str(exc)
    return None


def parse_json_body(request: HttpRequest) -> Any:
    """Parse a JSON request body strictly; raise ApplicationError with a usable message."""
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApplicationError(
            f"Send the body as application/json (got {content_type or 'no content type'}).",
            status=415,
            code="unsupported-media-type",
        )
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > settings.API_MAX_BODY_BYTES:
        raise ApplicationError(
            f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.",
            status=413,
            code="payload-too-large",
        )
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApplicationError(
            f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.",
            status=413,
            code="payload-too-large",
        ) from None
    if len(raw) > settings.API_MAX_BODY_BYTES:
        raise ApplicationError(
            f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.",
            status=413,
            code="payload-too-large",
        )
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
        if _may_hold_bad_values(raw):
            jsonvalues.check(value)
    except jsonvalues.BadValue as exc:
        raise exc.refusal(status=400, prefix=("body",)) from None
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        position = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise ApplicationError(
            f"The body is not valid JSON{position}: {message}.",
            status=400,
            code="malformed-json",
        ) from None
    return value


class StrictJSONParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        value = parse_json_body(request)
        if not isinstance(value, dict):
            raise ApplicationError(
                "The body must be a JSON object.",
                status=422,
                code="validation-error",
                errors=[{"loc": ["body"], "msg": "must be an object"}],
            )
        return value


# --- the OpenAPI document: what the wire does --------------------------------------------------

PROBLEM_JSON = "application/problem+json"
# Strings we store never hold NUL (PostgreSQL text refuses it; the body parser answers 400).
NO_NUL = r"^[^\x00]*$"
# Any JSON value the body parser accepts inside `payload` and `metadata`: no NUL in strings or
# keys (nesting deeper than MAX_DEPTH is refused too, which a schema cannot say).
JSON_VALUE = {
    "description": f"Any JSON value: strings and keys without NUL, nested at most {jsonvalues.MAX_DEPTH} deep.",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {"$ref": "#/components/schemas/JsonObject"},
    ],
}
# pydantic cannot refer to a component it does not know: a schema field says JSON_OBJECT_MARK and
# `document` puts the object schema in its place.
JSON_OBJECT_MARK = {"x-json-object": True}
JSON_OBJECT = {
    "type": "object",
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
}


class ProblemAPI(NinjaAPI):
    """NinjaAPI whose OpenAPI document says what the wire does: errors are problem+json."""

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        return document(schema)


def document(schema: Any) -> Any:
    """Rewrite ninja's document in place: error responses as problem+json, request bodies that
    must be objects (the parser refuses `null`), and the JSON value schemas they refer to."""
    for path in schema["paths"].values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                choices = body["schema"].get("anyOf", [])
                objects = [c for c in choices if c != {"type": "null"}]
                if len(choices) == 2 and len(objects) == 1:
                    body["schema"] = objects[0]
    _expand_json_objects(schema)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["JsonValue"] = JSON_VALUE
    schemas["JsonObject"] = JSON_OBJECT
    return schema


def _expand_json_objects(node: Any) -> None:
    if isinstance(node, dict):
        if node.pop("x-json-object", False):
            node.update(JSON_OBJECT)
        for value in node.values():
            _expand_json_objects(value)
    elif isinstance(node, list):
        for value in node:
            _expand_json_objects(value)

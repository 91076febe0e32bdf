"""Route registration that validates bodies with pydantic and documents itself as OpenAPI.

Each route names its request and response models; the same models validate input and
generate the served OpenAPI document, so the docs cannot drift from the behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from gateway.api import jsonbody
from gateway.errors import BadRequest, ValidationFailed

Handler = Callable[..., Awaitable[Any]]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tags: tuple[str, ...]
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()
    body_required: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's ``("regions", 2, "x")`` -> ``"regions[2].x"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_error(exc: ValidationError) -> ValidationFailed:
    first = exc.errors()[0]
    loc = field_path(tuple(first["loc"]))
    cause = (first.get("ctx") or {}).get("error")
    where = getattr(cause, "where", None)
    if where:
        loc = f"{loc}.{where}" if loc else where
    if first["type"] == "extra_forbidden":
        message = f"unknown field {loc!r}"
    elif first["type"] == "missing":
        message = f"missing field {loc!r}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        message = f"{loc}: {message}" if loc and not message.startswith(loc) else message
    return ValidationFailed(message, field=loc or None,
                            details={"errors": [{"field": field_path(tuple(e["loc"])), "message": e["msg"]}
                                                for e in exc.errors()[:20]]})


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The JSON body; an empty one is a 400 where the operation requires a body (so an empty
    ``PUT /layout`` cannot silently reset anything) and ``{}`` where it is optional."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("this operation needs a JSON object body", code="missing_body")
        return {}
    return jsonbody.loads(raw)


def parse_body(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate strictly, as the served schema reads: ``0`` is not a boolean, ``"5"`` not an integer."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="malformed_json")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from exc


dumps = jsonbody.dumps


class ApiRouter:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, *, summary: str = "", tags: tuple[str, ...] = (),
            body: type[BaseModel] | None = None, response: type[BaseModel] | None = None, status: int = 200,
            auth: bool = True, errors: tuple[int, ...] = (), body_required: bool = True, **extra: Any) -> None:
        self.routes.append(Route(method.upper(), path, handler, summary or (handler.__doc__ or "").strip(),
                                 tags, body, response, status, auth, errors, body_required, extra))

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(route.method, route.path, self._wrap(route))

    @staticmethod
    def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if route.body is not None:
                data = await read_json(request, required=route.body_required)
                result = await route.handler(request, parse_body(route.body, data))
            else:
                result = await route.handler(request)
            if isinstance(result, web.StreamResponse):
                return result
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json")
            if result is None:
                return web.Response(status=204)
            return web.json_response(result, status=route.status, dumps=dumps)
        handle.__name__ = route.handler.__name__
        return handle

    # ------------------------------------------------------------------ OpenAPI
    def openapi(self, *, title: str, version: str, description: str = "") -> dict[str, Any]:
        models = {m for r in self.routes for m in (r.body, r.response) if m is not None}
        from gateway.api.schemas import ErrorBody

        models.add(ErrorBody)
        refs, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                        ref_template="#/components/schemas/{model}")
        paths: dict[str, Any] = {}
        for route in self.routes:
            op: dict[str, Any] = {"summary": route.summary.splitlines()[0] if route.summary else "",
                                  "description": route.summary, "tags": list(route.tags),
                                  "operationId": route.handler.__name__}
            params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in re.findall(r"{(\w+)}", route.path)]
            params += route.extra.get("query", [])
            if params:
                op["parameters"] = params
            if route.body is not None:
                op["requestBody"] = {"required": route.body_required, "content": {
                    "application/json": {"schema": refs[(route.body, "validation")]}}}
            if "request_content" in route.extra:
                op["requestBody"] = {"required": True, "content": route.extra["request_content"]}
            ok: dict[str, Any] = {"description": "success"}
            if route.response is not None:
                schema = refs[(route.response, "validation")]
                if route.extra.get("many"):
                    schema = {"type": "array", "items": schema}
                ok["content"] = {"application/json": {"schema": schema}}
            responses: dict[str, Any] = {str(route.status): ok}
            error_ref = {"content": {"application/json": {"schema": refs[(ErrorBody, "validation")]}}}
            codes = set(route.errors) | ({400} if route.body else set()) | ({401, 403} if route.auth else set())
            for code in sorted(codes):
                responses[str(code)] = {"description": _REASONS.get(code, "error"), **error_ref}
            op["responses"] = responses
            if route.auth:
                op["security"] = [{"bearer": []}, {"basic": []}]
            paths.setdefault(route.path, {})[route.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version, "description": description},
            "paths": paths,
            "components": {"schemas": defs.get("$defs", {}), "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {"type": "http", "scheme": "basic"}}},
        }


_REASONS = {400: "bad input", 401: "missing, invalid or expired credentials", 403: "not allowed",
            404: "not found", 409: "conflict", 413: "payload too large", 415: "unsupported media type",
            422: "valid JSON, impossible request", 429: "too many requests", 503: "no capacity"}

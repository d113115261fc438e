"""The OpenAPI document as a contract, checked on the wire.

`run_schemathesis` fuzzes a live Gatehouse with schemathesis' own CLI (a separate process, the
tool as its users run it). `DocumentChecker` checks any exchange an HTTP client makes — a
request body against the operation's request schema, the response against its status codes,
content types and schemas — so a client's own tests prove that it speaks the document:

    checker = DocumentChecker.load(base_url)
    httpx.Client(base_url=..., event_hooks={"response": [checker.check_response]})
    ...
    assert checker.checked  # and every exchange passed, or check_response raised
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema

OPENAPI_PATH = "/api/v1/openapi.json"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
)
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


def run_schemathesis(
    *, base_url: str, key: str, seed: int, max_examples: int, timeout: float, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Every operation, every phase (stateful included), our five checks; exit 0 = no failure."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base_url}{OPENAPI_PATH}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {key}",
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "NO_COLOR": "1"}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=workdir,  # it keeps a cache folder in the working directory
        check=False,
    )


@dataclass
class DocumentChecker:
    """Checks exchanges against the document served by the app itself."""

    document: dict[str, Any]
    checked: list[str] = field(default_factory=list)
    _schema: Any = None

    @classmethod
    def load(cls, base_url: str) -> DocumentChecker:
        response = httpx.get(f"{base_url}{OPENAPI_PATH}", timeout=10)
        response.raise_for_status()
        return cls(response.json())

    def check_response(self, response: httpx.Response) -> None:
        """httpx response hook: raise AssertionError when the exchange breaks the document."""
        import schemathesis

        if self._schema is None:
            self._schema = schemathesis.openapi.from_dict(self.document)
        request = response.request
        operation = self._schema.find_operation_by_path(request.method, request.url.path)
        assert operation is not None, f"{request.method} {request.url.path} is not in the document"
        body = request.content
        if body:
            self.check_request_body(operation.method, operation.path, json.loads(body))
        response.read()
        response.close()  # httpx sets `elapsed`, which schemathesis reads, on close
        operation.validate_response(response)
        self.checked.append(f"{request.method} {request.url.path} -> {response.status_code}")

    def check_request_body(self, method: str, path: str, body: Any) -> None:
        full_path = next(p for p in self.document["paths"] if p.endswith(path))
        spec = self.document["paths"][full_path][method.lower()]["requestBody"]
        schema = spec["content"]["application/json"]["schema"]
        resolver = {**schema, "components": self.document["components"]}
        jsonschema.validate(body, resolver, cls=jsonschema.Draft202012Validator)

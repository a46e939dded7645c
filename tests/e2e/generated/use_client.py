"""Drives a Kiln server through a client that openapi-python-client
generated from the server's own /openapi.json (tests/e2e/generated_client.rs
generates it into a temporary directory, then runs this). Every answer is
parsed into the generated models, so a document that does not say what the
server does fails here. Prints one JSON line of what it saw.

Usage: use_client.py BASE_URL ADMIN_PASSWORD
"""

import json
import sys

import httpx

from kiln_client import AuthenticatedClient, Client
from kiln_client.api.auth import get_me, login
from kiln_client.api.executions import execute_code, execute_script, get_execution, list_executions
from kiln_client.api.scripts import create_script, get_script, list_scripts
from kiln_client.models import (
    Accepted,
    CreateScriptJsonBody,
    ErrorEnvelope,
    ExecuteCodeBody,
    LanguageName,
    ExecuteRequest,
    Execution,
    ListingExecution,
    ListingScript,
    LoginRequest,
    Script,
    TokenResponse,
)
from kiln_client.models.execute_request_parameters_type_0 import ExecuteRequestParametersType0


def main() -> None:
    base, password = sys.argv[1], sys.argv[2]
    # The generated client waits forever unless told; a waited run takes
    # at most 300 s.
    timeout = httpx.Timeout(120.0)
    anonymous = Client(base_url=base, timeout=timeout, raise_on_unexpected_status=True)
    token = login.sync(client=anonymous, body=LoginRequest(username="admin", password=password))
    assert isinstance(token, TokenResponse), token
    refused = login.sync(client=anonymous, body=LoginRequest(username="admin", password="wrong password"))
    assert isinstance(refused, ErrorEnvelope), refused

    client = AuthenticatedClient(
        base_url=base, token=token.access_token, timeout=timeout, raise_on_unexpected_status=True
    )
    me = get_me.sync(client=client)
    assert me.username == "admin", me

    script = create_script.sync(
        client=client,
        body=CreateScriptJsonBody(name="generated", language=LanguageName.JAVASCRIPT, content="function main(p) { return p.n * 2; }"),
    )
    assert isinstance(script, Script), script
    run = execute_script.sync(
        "generated",
        client=client,
        body=ExecuteRequest(parameters=ExecuteRequestParametersType0.from_dict({"n": 21})),
        wait=True,
    )
    assert isinstance(run, Execution), run
    queued = execute_script.sync("generated", client=client, body=ExecuteRequest(), async_=True)
    assert isinstance(queued, Accepted), queued
    ad_hoc = execute_code.sync(
        client=client, body=ExecuteCodeBody(language=LanguageName.PYTHON, code="def main():\n    return [1, 'two']\n")
    )
    assert isinstance(ad_hoc, Execution), ad_hoc
    read = get_execution.sync(run.id, client=client)
    assert isinstance(read, Execution), read
    scripts = list_scripts.sync(client=client, size=10)
    assert isinstance(scripts, ListingScript), scripts
    executions = list_executions.sync(client=client, size=10)
    assert isinstance(executions, ListingExecution), executions
    missing = get_script.sync("missing", client=client)
    assert isinstance(missing, ErrorEnvelope), missing

    print(
        json.dumps(
            {
                "user": me.username,
                "kind": script.kind,
                "status": str(read.status.value),
                "result": read.result,
                "timeout_ms": read.limits.timeout_ms,
                "queued": queued.execution_id,
                "ad_hoc": ad_hoc.result,
                "scripts": [s.name for s in scripts.data],
                "executions": len(executions.data),
                "missing": missing.error.code,
            }
        )
    )


if __name__ == "__main__":
    main()

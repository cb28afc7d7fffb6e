"""gateway/platform.py: dispatch's outcome for each alarm (POST /v1/outcomes), and the
review of devices worst first (GET /v1/review, `edge-gateway platform review`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway import auth
from gateway.platform import PlatformServer
from test_platform import Client, body, ev, with_platform


async def post_outcomes(client: Client, creds: auth.Credentials | None, outcomes: Any) -> tuple[int, Any]:
    data = json.dumps({"outcomes": outcomes}).encode()
    headers = {"Content-Type": "application/json", **(auth.sign(creds, "POST", "/v1/outcomes", data) if creds else {})}
    async with client.http.post(client.url + "/v1/outcomes", data=data, headers=headers) as r:
        return r.status, await r.json()


def test_outcomes_rank_the_devices_worst_first(tmp_path: Path) -> None:
    async def fn(client: Client, p: PlatformServer) -> None:
        noisy = [ev("noisy", i, "elevator.door_open_moving", action="raise", floor=i) for i in range(1, 5)]
        good = [ev("good", i, "elevator.entrapment", action="raise", floor=1) for i in range(1, 3)]
        quiet = [ev("quiet", 1)]                                    # telemetry, no alarm
        assert (await client.post(body(*quiet)))[0] == 200           # the first heard of: silent longest
        assert (await client.post(body(*noisy, *good)))[0] == 200
        dispatch = p.add_gateway("dispatch-1")                      # dispatch signs with its own credentials
        said = [{"id": e["id"], "outcome": "false"} for e in noisy[:3]]
        said += [{"id": noisy[3]["id"], "outcome": "confirmed"}]
        said += [{"id": e["id"], "outcome": "confirmed", "note": "passenger freed"} for e in good]
        assert await post_outcomes(client, dispatch, said) == (200, {"recorded": 6})

        status, review = await client.get("/v1/review")
        assert status == 200 and review["days"] == 30
        assert [d["device"] for d in review["devices"]] == ["noisy", "good", "quiet"]
        first = review["devices"][0]
        assert (first["alarms"], first["false"], first["confirmed"], first["false_rate"]) == (4, 3, 1, 0.75)
        assert first["types"] == {"elevator.door_open_moving": 4}
        assert review["devices"][2]["false_rate"] is None and review["devices"][2]["alarms"] == 0

        # a later word on the same alarm replaces the earlier one
        assert (await post_outcomes(client, dispatch, [{"id": noisy[0]["id"], "outcome": "duplicate"}]))[0] == 200
        noisy_now = (await client.get("/v1/review"))[1]["devices"][0]
        assert (noisy_now["false"], noisy_now["duplicate"]) == (2, 1)

        # what is refused, naming the item; nothing of such a request is kept
        status, answer = await post_outcomes(client, dispatch, [{"id": good[0]["id"], "outcome": "false"},
                                                                {"id": quiet[0]["id"], "outcome": "false"}])
        assert status == 400 and answer["error"].startswith("outcomes[1].id:") and "not an alarm" in answer["error"]
        assert (await client.get("/v1/review"))[1]["devices"][1]["false"] == 0
        status, answer = await post_outcomes(client, dispatch, [{"id": good[0]["id"], "outcome": "maybe"}])
        assert status == 400 and "outcomes[0].outcome: must be one of confirmed, false, duplicate" in answer["error"]
        assert (await post_outcomes(client, None, said))[0] == 401                       # unsigned
        assert (await client.get("/v1/review", days="0"))[0] == 400
    with_platform(tmp_path, fn)

    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "platform", "review", "--db",
                            str(tmp_path / "platform.sqlite")], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["noisy", "good", "quiet"]
    assert "50 %" in lines[2]                      # 2 false out of 4 with an outcome

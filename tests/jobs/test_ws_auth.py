"""The job WebSocket's first frame: anything but {"token": "<string>"} closes with 4401."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from structlog.testing import capture_logs

FIRST_FRAMES = [
    ("text", '{"token": 123}'),
    ("text", '{"token": ["a"]}'),
    ("text", '{"token": {"a": 1}}'),
    ("text", '["token"]'),
    ("text", "not json"),
    ("bytes", b'{"token": "abc"}'),
]


@pytest.mark.parametrize(("kind", "frame"), FIRST_FRAMES)
def test_a_malformed_first_frame_closes_4401(
    app_client: TestClient, kind: str, frame: str | bytes
) -> None:
    with capture_logs() as logs, app_client.websocket_connect("/ws/jobs/some-job") as ws:
        if isinstance(frame, bytes):
            ws.send_bytes(frame)
        else:
            ws.send_text(frame)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4401
    assert "authentication required" in closed.value.reason
    assert not [e for e in logs if e["log_level"] in ("error", "exception", "critical")]


def test_a_good_first_frame_still_authenticates(app_client: TestClient, admin_token: str) -> None:
    with app_client.websocket_connect("/ws/jobs/no-such-job") as ws:
        ws.send_json({"token": admin_token})
        assert ws.receive_json()["type"] == "error"  # past auth: the job is unknown
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4404

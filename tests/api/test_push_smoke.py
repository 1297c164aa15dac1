"""The seed's own example works end to end through the API (dispatcher off)."""

from __future__ import annotations


async def test_dynamic_push_answers_in_seed_shape(app_client, make) -> None:
    client, gateway = await app_client()
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.005")
    response = await client.post("/api/v2/push", json={
        "token": token, "priority ": "0", "application": "1", "globalmessage": "",
        "data": [{"number": "919876543210", "message": "MESSAGE FOR NUMBER 1"},
                 {"number": "14155552671", "message": "MESSAGE FOR NUMBER 2"}],
    })
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == 100
    assert body["message"] == "Success"
    assert isinstance(body["push_id"], str)
    assert [e["number"] for e in body["data"]] == ["919876543210", "14155552671"]
    assert all(isinstance(e["msg_id"], str) and e["credit"] == "0.005" for e in body["data"])
    assert body["balance"] == "9.99"
    report = await client.post("/api/v2/delivery-report",
                               json={"token": token, "push_id": body["push_id"]})
    assert report.status_code == 200
    assert [item["status"] for item in report.json()["data"]] == [0, 0]

from tests.flowkit import run_flow, validate_doc


async def test_inject_once_reaches_collector() -> None:
    doc = {
        "id": "smoke",
        "nodes": [
            {
                "id": "tick",
                "type": "inject",
                "once": True,
                "once_delay": 0,
                "payload": {"t": 1},
                "wires": ["out"],
            },
            {"id": "out", "type": "collect"},
        ],
    }
    async with run_flow(doc) as h:
        await h.send("out", 5)
        import asyncio

        for _ in range(100):
            if len(h.received("out")) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(map(str, h.payloads("out"))) == ["5", "{'t': 1}"]


def test_validate_doc_reports_unknown_type() -> None:
    v, issues = validate_doc({"id": "x", "nodes": [{"id": "a", "type": "colect"}]})
    assert v is None
    assert [i.format() for i in issues] == [
        "flow.json:1: node a: type: unknown node type 'colect'; did you mean 'collect'?"
    ]

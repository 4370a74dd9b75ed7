"""/metrics: Prometheus text that follows what the server did."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from emcc_trio.testing.harness import MakeServer
from emcc_trio.testing.programs import HELLO_C, program


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_follow_requests_compiles_cache_and_caps(make_server: MakeServer) -> None:
    server = make_server(maxOutputBytes=4096)
    assert server.compile(HELLO_C).status_code == 200
    assert server.compile(HELLO_C).json()["cached"] is True
    assert server.compile(program("flood.c")).json()["limit"] == "output"
    with server.client() as client:
        assert client.get("/nope").status_code == 404
        assert client.get("/artifacts/" + "0" * 32 + "/app.js").status_code == 404
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("emcc_trio_requests_total", (("route", "/compile"), ("status", "200")))] == 2
    assert got[("emcc_trio_requests_total", (("route", "/compile"), ("status", "422")))] == 1
    assert got[("emcc_trio_requests_total", (("route", "other"), ("status", "404")))] == 1
    assert got[("emcc_trio_requests_total", (("route", "/artifacts"), ("status", "404")))] == 1
    assert got[("emcc_trio_compile_duration_seconds_count", ())] == 2
    assert got[("emcc_trio_queue_wait_seconds_count", (("client_class", "single"),))] == 2
    assert got[("emcc_trio_cache_requests_total", (("result", "hit"),))] == 1
    assert got[("emcc_trio_cache_requests_total", (("result", "miss"),))] == 2
    assert got[("emcc_trio_cap_kills_total", (("limit", "output"),))] == 1
    assert got[("emcc_trio_cache_bytes", ())] > 10_000  # hello world's app.js + app.wasm
    assert got[("emcc_trio_jobs_running", ())] == 0
    assert got[("emcc_trio_queue_waiting", ())] == 0

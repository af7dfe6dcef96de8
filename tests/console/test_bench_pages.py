"""benchmarks/bench_pages renders every page it names on a chain's history: here a small
one (bench_queries' generator, 5,000 invoices on a temp SQLite), so a renamed widget key
or a page that stops before its heading fails here and not in the next benchmark run.
No timing is asserted."""

from __future__ import annotations

from benchmarks import bench_pages, bench_queries
from sync.settings import Settings
from sync.state import schema


def test_every_page_renders_on_a_generated_history(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    engine = schema.make_engine(url)
    schema.init_db(engine, source_tables=True)
    bench_queries._build(engine, 5000, 100, Settings(database_url=url).target)
    engine.dispose()
    result = bench_pages.bench_pages(url, repeat=1)
    assert result["errors"] == {}
    assert set(result["seconds"]) == set(bench_pages._scenarios(bench_pages._history(url)))

"""Property-based check of exactly-once delivery: Hypothesis drives random sequences of
fault settings, runs and SIGKILLed runs against a real sandbox and database, and after
every step the invariants must hold; at the end everything is in Oppen exactly once."""

from __future__ import annotations

import secrets
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hsettings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, \
    run_state_machine_as_test

from sync import actions

from sync.state import schema
from sync.oppen.client import OppenClient
from sync.settings import Settings, validate
from sync.errors import RunInProgress
from sync.oppen.retry import Policy
from sync.sandbox import Faults, OppenSandbox

from helpers import BACKENDS, MYSQL_URL, drop_mysql_database, mysql_database
from faults import (check_accounting, check_exactly_once, check_log, check_no_repeat_posts,
                    cli_env, kill_after_posts,
                    resend_until_done, seed_days, start_cli)

INVOICES = 40


def machine_for(backend: str):
    class Delivery(RuleBasedStateMachine):
        @initialize()
        def setup(self):
            self.password = secrets.token_urlsafe(12)
            self.sandbox = OppenSandbox(password=self.password, faults=Faults(hang_seconds=0.45,
                                                                              seed=7)).start()
            if backend == "sqlite":
                self.tmp = tempfile.TemporaryDirectory()
                url = f"sqlite:///{Path(self.tmp.name) / 'p.sqlite3'}"
                self.mysql = None
            else:
                name = f"sync_prop_{uuid.uuid4().hex[:10]}"
                parsed, base = mysql_database(name)
                url = parsed.render_as_string(hide_password=False)
                self.mysql = (base, name)
            self.kills: list[float] = []   # when a run was SIGKILLed (time.monotonic())
            self.engine = schema.make_engine(url)
            schema.init_db(self.engine, source_tables=True)
            seed_days(self.engine, ["NORTE", "SUR"], days=1, per_day=INVOICES // 2)
            self.settings = validate(Settings(
                database_url=url, base_url=self.sandbox.url, username="API",
                password=self.password, timeout=0.3, lease_seconds=1.5))
            self.client = OppenClient(base_url=self.sandbox.url, api="ApiNg", username="API",
                                      password=self.password, timeout=0.3)
            self.policy = Policy(max_attempts=3, backoff_base=0.001, backoff_cap=0.01,
                                 breaker_threshold=25, sleep=lambda s: None)

        @rule(error=st.floats(0, 0.4), timeout=st.floats(0, 0.2), drop=st.floats(0, 0.2),
              uses=st.sampled_from([0, 3, 10]), seed=st.integers(0, 1000))
        def set_faults(self, error, timeout, drop, uses, seed):
            self.sandbox.set_faults(error_rate=error, timeout_rate=timeout, drop_rate=drop,
                                    token_max_uses=uses, seed=seed)

        @rule(concurrency=st.integers(1, 4))
        def run_in_process(self, concurrency):
            try:
                actions.resend(self.engine, self.settings.replace(concurrency=concurrency),
                               user="prop", client=self.client, policy=self.policy)
            except RunInProgress:
                pass  # a killed run's lease has not expired yet

        @rule(posts=st.integers(1, 12))
        def run_and_kill(self, posts):
            proc = start_cli(["resend"], cli_env(self.settings))
            killed_at = kill_after_posts(proc, self.sandbox, posts=posts, limit=20)
            if killed_at is not None:
                self.kills.append(killed_at)

        @invariant()
        def nothing_doubled_and_database_agrees(self):
            if not hasattr(self, "engine"):
                return
            check_log(self.sandbox.request_log())
            check_no_repeat_posts(self.sandbox, self.kills)
            check_accounting(self.engine, self.settings.target)
            stored = {i["OfficialSerNr"]: i["SerNr"] for i in self.sandbox.invoices()}
            assert len(stored) == len(self.sandbox.invoices())
            for number, state, sernr in _rows(self.engine, self.settings.target):
                if state == schema.SENT:
                    assert stored.get(number) == sernr

        def teardown(self):
            if not hasattr(self, "engine"):
                return
            try:
                self.sandbox.set_faults(error_rate=0, timeout_rate=0, drop_rate=0,
                                        token_max_uses=0)
                time.sleep(0.2)
                resend_until_done(cli_env(self.settings), self.engine, self.settings.target)
                check_exactly_once(self.engine, self.settings.target, self.sandbox,
                                   expected=INVOICES)
                check_log(self.sandbox.request_log())
            finally:
                self.client.close()
                self.sandbox.stop()
                self.engine.dispose()
                if self.mysql:
                    drop_mysql_database(*self.mysql)
                else:
                    self.tmp.cleanup()

    return Delivery


def _rows(engine, target):
    import sqlalchemy as sa
    t = schema.oppen_invoices
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.official_sernr, t.c.state, t.c.sernr)
                            .where(t.c.target == target)).all()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_random_faults_runs_and_kills(backend):
    run_state_machine_as_test(machine_for(backend), settings=hsettings(
        max_examples=6, stateful_step_count=6, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))

"""The notification targets file: read and validated into a TargetsSpec (pipeline.notify.targets), and its
hot-reloading holder.

File shape (deploy/notify/targets.yaml is the local stack's, with every option):

    version: 1                              # required, exactly 1
    kind: notify-targets                    # required, exactly this
    timezone: Asia/Shanghai                 # optional; quiet hours and the times in messages
    case_link: http://127.0.0.1:8080/cases/$case_id    # optional; the case page, `$case_id` is filled in
    command_notify: [district-command]      # optional; told when a case escalates to the command centre
    smtp: {host: 127.0.0.1, port: 2525, security: starttls, username: ..., password: {env: ...},
           from: "城运中心 <ops@cityops.local>", ca_file: ..., timeout: 10}   # needed by `email` channels
    defaults: {rate: 20/min, quiet_hours: "22:00-07:00"}  # optional, for every target that does not say
    templates: {sms: "...", email: {subject: "...", text: "..."}}    # optional, per channel kind
    targets:
      gas-company:                          # a name the rules' `notify` lists use
        label: 燃气公司抢修调度
        rate: 20/min                        # messages per minute (or /s, /h); bursts up to that many
        quiet_hours: "22:00-07:00"          # or null; priority 1 is never held
        template: "..."                     # optional text for every channel of this target
        channels:                           # one or more; every channel is sent
          - {kind: wecom, url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...", format: markdown}
          - {kind: dingtalk, url: "https://oapi.dingtalk.com/robot/send?access_token=...", secret: SEC...}
          - {kind: webhook, url: https://..., token: {env: CITYOPS_NOTIFY_SECRET_GAS}}
          - {kind: sms, url: https://..., token: ..., to: ["+8613800000000"], max_chars: 70}
          - {kind: email, to: [duty@gas.example]}

A secret (`secret`, `token`, `password`) is text or `{env: NAME}`, NAME starting `CITYOPS_NOTIFY_SECRET_`,
taken from the environment that pipeline.config read (`Settings.notify_secrets`), so no secret needs to live in
the file. Every mistake is reported as `file:line:column: key: what` (rules/errors.py), all of them at once: an
unknown key, a malformed address (URL, robot URL without its key or access token, e-mail, phone), an unknown
template field, a target the rules name but the file lacks. A holder refuses such a file and keeps the version
it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline.model.watched import WatchedFile
from pipeline.notify.targetparser import TargetsParser
from pipeline.notify.targets import TargetsError, TargetsSpec
from rules.errors import RulesError
from rules.nodes import NodeReader, compose_file

log = logging.getLogger("cityops.notify")


def parse_targets(path: Path, *, required: Mapping[str, str] | None = None,
                  secrets: Mapping[str, str] | None = None, text: str | None = None) -> TargetsSpec:
    """Read and validate a targets file; raise TargetsError listing every problem.

    `required`: target names something else depends on (the rules' notify lists) -> who names it, for the
    message; each must be defined. `secrets`: the `CITYOPS_NOTIFY_SECRET_*` values (Settings.notify_secrets)."""
    try:
        if text is None:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise TargetsError([f"{path}:1:1: (file): cannot read: {err}"]) from err
        root = compose_file(path, text)
    except TargetsError:
        raise
    except RulesError as err:
        raise TargetsError(err.problems) from err
    reader = NodeReader(str(path))
    spec = TargetsParser(reader, dict(secrets or {})).spec(root, str(path), text, dict(required or {}))
    if reader.problems:
        raise TargetsError(reader.problems)
    assert spec is not None
    return spec


class TargetsHolder(WatchedFile[TargetsSpec]):
    """The targets a running notifier uses, swapped atomically when the file changes (pipeline.model.watched).

    Construction loads the file and raises TargetsError when it is invalid (the notifier must not start on a
    bad file). `maybe_reload()` (one stat) reloads a changed file; a new version that fails validation is
    refused: the current one keeps running, `last_error` holds the problems and a WARNING names file, line
    and key. `required` is asked again at each load (the rules may have changed meanwhile)."""

    label = "notify targets"
    refused = (TargetsError,)

    def __init__(self, path: Path, required: Callable[[], Mapping[str, str]] = dict,
                 secrets: Mapping[str, str] | None = None) -> None:
        self._required = required
        self._secrets = dict(secrets or {})
        super().__init__(Path(path))

    def load(self) -> TargetsSpec:
        return parse_targets(self.file(), required=self._required(), secrets=self._secrets)

    def same(self, old: TargetsSpec, new: TargetsSpec) -> bool:
        return old.version == new.version

    def problem(self, err: Exception) -> str:
        return "; ".join(err.problems) if isinstance(err, TargetsError) else str(err)

    def on_refused(self, err: Exception) -> None:
        log.warning("notify targets reload refused, keeping version %s: %s", self.current.version, self.last_error)

    def on_installed(self, previous: TargetsSpec) -> None:
        log.warning("notify targets reloaded: %s -> %s", previous.version, self.current.version)

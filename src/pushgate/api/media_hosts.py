"""The push route's media host check: plan, resolve the media host names the plan could not
judge, plan again with their verdicts.

A push without media, or whose media hosts were judged in the last seconds, is planned once and
asks no DNS; the others wait for one lookup per distinct name (concurrent pushes share it),
through the event loop's ``getaddrinfo`` so the loop never blocks.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import MutableMapping
from typing import cast

from pushgate.core.channels import ChannelSpec
from pushgate.core.push import Limits, MediaHosts, PushBody, PushPlan, plan_push
from pushgate.outbound import NameVerdicts

#: Distinct not-yet-known media host names one push may make the gateway look up; entries
#: naming more are refused, so one request cannot keep the resolver busy for minutes.
MAX_NAMES_PER_PUSH = 64


async def plan_with_media_hosts(body: PushBody, channel: ChannelSpec, limits: Limits,
                                allow_private: bool, names: NameVerdicts) -> PushPlan:
    known = names.known()
    plan = plan_push(body, channel, limits, MediaHosts(allow_private, known))
    if not plan.media_hosts_to_resolve:
        return plan
    wanted = sorted(plan.media_hosts_to_resolve)
    judged: dict[str, str | None] = await names.judge(wanted[:MAX_NAMES_PER_PUSH])
    for name in wanted[MAX_NAMES_PER_PUSH:]:
        judged[name] = (f"{name!r} was not looked up: the push names more than "
                        f"{MAX_NAMES_PER_PUSH} media hosts not seen lately")
    plan = plan_push(body, channel, limits, MediaHosts(allow_private, ChainMap(
        # ChainMap writes only to its first map; ``known`` is read, never changed.
        judged, cast(MutableMapping[str, str | None], known))))
    assert not plan.media_hosts_to_resolve, plan.media_hosts_to_resolve
    return plan

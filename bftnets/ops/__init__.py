from bftnets.ops.butterfly import *  # noqa: F401,F403
from bftnets.ops.plan import choose_groups, parse_plan, plan_cost  # noqa: F401

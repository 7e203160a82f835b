"""Synthetic regions of any size, for benchmarks and scale tests."""

from __future__ import annotations

from typing import Any

import yaml


def synthetic_region(
    operators: int, departments: int = 200, pbx_nodes: int = 20, supervisors: int = 0
) -> dict[str, Any]:
    """A valid spec with ``operators`` operators spread over ``departments`` departments and pbx nodes.

    ``supervisors`` (none by default, as in the benchmark's region) each watch two departments.
    """
    deps = [
        {
            "id": f"dep{i:03d}",
            "name": f"Ведомство № {i}",
            "queue": {"number": str(6000 + i), "strategy": "rrmemory"},
            "hours": "always" if i % 5 == 0 else "weekdays",
        }
        for i in range(departments)
    ]
    ops = [
        {
            "extension": str(100000 + i),
            "name": f"Оператор {i}",
            "departments": [f"dep{i % departments:03d}", {"department": f"dep{(i + 1) % departments:03d}",
                                                          "penalty": 2}],
        }
        for i in range(operators)
    ]
    sups = [
        {"extension": str(90000 + i), "name": f"Старший {i}",
         "departments": [f"dep{i % departments:03d}", f"dep{(i + 7) % departments:03d}"]}
        for i in range(supervisors)
    ]
    nodes = [{"name": f"pbx{i + 1}", "address": f"10.77.{i // 200}.{10 + i % 200}", "roles": ["asterisk"]}
             for i in range(pbx_nodes)]
    nodes += [
        {"name": "db1", "address": "10.77.1.21", "roles": ["postgresql"]},
        {"name": "crm1", "address": "10.77.1.31", "roles": ["crm"]},
        {"name": "mon1", "address": "10.77.1.41", "roles": ["monitoring"]},
    ]
    if pbx_nodes > 1:  # a pool of Asterisk nodes behind the SIP edge
        nodes += [{"name": f"edge{i}", "address": f"10.77.1.5{i}", "roles": ["sip-proxy"]} for i in (1, 2)]
    options = {str(k): {"menu": f"m{k}"} for k in range(1, 10)}
    menus = {f"m{k}": {"prompt": "ekc/menu", "options": {str(j): {"department": f"dep{(k * 10 + j) % departments:03d}"}
                                                         for j in range(10)}}
             for k in range(1, 10)}
    return {
        "apiVersion": "ekc/v1",
        "region": {"code": "77", "name": "Синтетическая область", "timezone": "Europe/Moscow"},
        "network": {
            "domain": "ekc.synthetic.local",
            "subnets": [{"name": "servers", "cidr": "10.77.0.0/22", "gateway": "10.77.0.1"}],
            "ntp": ["10.77.0.1"],
            "admin_networks": ["10.77.0.0/22"],
            "deploy_host": "10.77.0.1",
        },
        "nodes": nodes,
        "telephony": {
            "trunks": [{"name": "carrier", "peers": ["10.77.0.5"], "dids": ["+74950000000"]}],
            "departments": deps,
            "schedules": {"weekdays": {"mon-fri": "08:00-20:00"}},
            "ivr": {"options": options, "menus": menus},
            "operators": ops,
            **({"supervisors": sups} if sups else {}),
            **({"edge": {"virtual_address": "10.77.1.50"}} if pbx_nodes > 1 else {}),
        },
    }


def synthetic_yaml(operators: int, departments: int = 200, pbx_nodes: int = 20, supervisors: int = 0) -> str:
    """The synthetic spec as YAML text, the way a ministry would write it."""
    region = synthetic_region(operators, departments, pbx_nodes, supervisors)
    return yaml.safe_dump(region, allow_unicode=True, sort_keys=False)

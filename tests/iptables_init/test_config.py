"""meshproxy_init.config: flags, environment, defaults, and the checks that exit 64."""

from __future__ import annotations

import ipaddress
import re

import pytest

from meshproxy_init import config
from meshproxy_init.config import Config, PortRange, load
from meshproxy_init.errors import EXIT_USAGE, ConfigError

from .support import INIT_DIR


def test_defaults_match_the_proxy_and_linkerd():
    cfg = load([], {})
    assert cfg == Config()
    assert (cfg.proxy_uid, cfg.inbound_port, cfg.outbound_port, cfg.admin_port) == (2102, 4143, 4140, 4191)
    assert (cfg.inbound_chain, cfg.outbound_chain, cfg.backend) == ("MESHPROXY_INBOUND", "MESHPROXY_OUTBOUND", "auto")
    assert not (cfg.dry_run or cfg.cleanup or cfg.ipv6)


def test_environment_sets_every_value_and_flags_win():
    env = {
        config.PROXY_UID: "1337", config.INBOUND_PORT: "15006", config.OUTBOUND_PORT: "15001",
        config.ADMIN_PORT: "15021", config.TAP_PORT: "15020", config.SKIP_INBOUND_PORTS: "22",
        config.SKIP_OUTBOUND_PORTS: "443",
        config.SKIP_SUBNETS: "10.0.0.0/8", config.IPV6: "yes", config.BACKEND: "legacy",
        config.INBOUND_CHAIN: "IN_X", config.OUTBOUND_CHAIN: "OUT_X", config.DRY_RUN: "1", config.CLEANUP: "on",
    }
    cfg = load([], env)
    assert cfg == Config(True, True, 1337, 15006, 15001, 15021, 15020, (PortRange(22, 22),), (PortRange(443, 443),),
                         (ipaddress.ip_network("10.0.0.0/8"),), True, "legacy", "IN_X", "OUT_X")
    cfg = load(["--proxy-uid", "7", "--no-ipv6", "--no-dry-run", "--backend", "nft"], env)
    assert (cfg.proxy_uid, cfg.ipv6, cfg.dry_run, cfg.backend) == (7, False, False, "nft")


def test_an_empty_environment_value_counts_as_unset():
    assert load([], {config.PROXY_UID: "", config.SKIP_SUBNETS: " "}) == Config()


def test_port_lists_take_ranges_like_linkerds_annotations():
    cfg = load(["--skip-inbound-ports", " 22, 8000-8100,22,9000:9001,,", "--skip-outbound-ports", "5432"], {})
    assert cfg.skip_inbound_ports == (PortRange(22, 22), PortRange(8000, 8100), PortRange(9000, 9001))
    assert [r.multiport() for r in cfg.skip_inbound_ports] == ["22", "8000:8100", "9000:9001"]
    assert [r.weight for r in cfg.skip_inbound_ports] == [1, 2, 2]
    assert cfg.skip_outbound_ports == (PortRange(5432, 5432),)


def test_subnets_of_both_families_with_host_bits_cleared():
    cfg = load(["--skip-subnets", "10.1.2.3/8, 192.168.0.7, fd00::1/8"], {})
    assert [str(n) for n in cfg.skip_subnets] == ["10.0.0.0/8", "192.168.0.7/32", "fd00::/8"]
    assert [str(n) for n in config.subnets_for(cfg, "ipv4")] == ["10.0.0.0/8", "192.168.0.7/32"]
    assert [str(n) for n in config.subnets_for(cfg, "ipv6")] == ["fd00::/8"]
    assert [str(n) for n in config.ignored_subnets(cfg)] == ["fd00::/8"]
    assert config.ignored_subnets(cfg._replace(ipv6=True)) == ()


@pytest.mark.parametrize("argv, env, words", [
    (["--skip-inbound-ports", "22,http"], {}, ["--skip-inbound-ports", "'http'", "8000-8100"]),
    ([], {config.SKIP_OUTBOUND_PORTS: "9-3"}, [config.SKIP_OUTBOUND_PORTS, "write 3-9"]),
    (["--inbound-port", "0"], {}, ["--inbound-port", "1 to 65535"]),
    (["--outbound-port", "70000"], {}, ["1 to 65535"]),
    (["--proxy-uid", "0"], {}, ["uid 0", "own uid"]),
    (["--proxy-uid", "proxy"], {}, ["numeric uid"]),
    (["--skip-subnets", "10.0.0.0/33"], {}, ["'10.0.0.0/33'", "CIDR"]),
    ([], {config.IPV6: "maybe"}, [config.IPV6, "true or false"]),
    (["--backend", "iptables"], {}, ["auto, nft or legacy"]),
    (["--inbound-chain", "OUTPUT"], {}, ["built-in"]),
    (["--outbound-chain", "A" * 29], {}, ["up to 28"]),
    (["--outbound-chain", "has space"], {}, ["letters, digits"]),
    (["--inbound-port", "4140"], {}, ["--inbound-port and --outbound-port are both 4140"]),
    (["--admin-port", "4143"], {}, ["--inbound-port and --admin-port"]),
    (["--tap-port", "4191"], {}, ["--admin-port and --tap-port"]),
    (["--inbound-chain", "X", "--outbound-chain", "X"], {}, ["distinct names"]),
    (["--no-such-flag"], {}, ["unrecognized", "--help"]),
])
def test_bad_values_exit_64_naming_flag_and_environment(argv, env, words):
    with pytest.raises(ConfigError) as caught:
        load(argv, env)
    assert caught.value.exit_code == EXIT_USAGE
    for word in words:
        assert word in str(caught.value)


def test_every_setting_has_its_own_environment_name_and_readme_documents_it():
    envs = [s.env for s in config.SETTINGS]
    assert len(set(envs)) == len(envs)
    assert all(re.fullmatch(r"MESHPROXY_INIT_[A-Z0-9_]+", e) for e in envs)
    assert {s.field for s in config.SETTINGS} == set(Config._fields)
    readme = (INIT_DIR / "README.md").read_text()
    for s in config.SETTINGS:
        assert s.env in readme and s.flag in readme, s

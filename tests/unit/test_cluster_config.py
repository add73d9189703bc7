from health.cluster.node_config import node_config_problems


def test_a_node_configured_for_the_proxies_has_no_problem():
    cfg = [b"cluster-replica-no-failover", b"yes", b"cluster-require-full-coverage", b"no", b"cluster-enabled", b"yes",
           b"cluster-allow-replica-migration", b"no"]
    assert node_config_problems("h:1", cfg) == []


def test_each_wrong_setting_is_named_with_why():
    problems = node_config_problems("h:1", {"cluster-replica-no-failover": "no",
                                            "cluster-require-full-coverage": "yes",
                                            "cluster-allow-replica-migration": "yes"})
    assert len(problems) == 3
    assert any("cluster-allow-replica-migration is yes, must be no" in p and "behind" in p for p in problems)
    assert any("cluster-replica-no-failover is no, must be yes" in p and "racing" in p for p in problems)
    assert any("cluster-require-full-coverage is yes, must be no" in p for p in problems)
    assert node_config_problems("h:2", {"cluster-enabled": "no"}) == ["h:2: cluster-enabled is no: not a cluster node"]
    assert "unknown" in node_config_problems("h:3", {"cluster-require-full-coverage": "no"})[0]

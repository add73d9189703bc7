"""The roles of a Raft node, as `RaftCore.role` and `/status` name them."""

FOLLOWER = "follower"
PRE_CANDIDATE = "pre_candidate"
CANDIDATE = "candidate"
LEADER = "leader"

"""Settings of federation: keys, peers, the topic, how often and how models are merged,
and what a peer's update must satisfy to be accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .config_section import Section


class FederationSettings(Section):
    private_key_file: Path | None = Field(None, description="Our Ed25519 key (PEM, from "
                                          "`stream-learner keys generate`). Federation is on "
                                          "when this and at least one peer key are set.")
    peer_id: str | None = Field(None, description="Our id in updates; peers list our public "
                                "key under it. Default: the key file's stem.")
    peers: dict[str, str] = Field(default_factory=dict, description="Allowlist: peer id -> "
                                  "public key (base64) or the path of its .pub file.")
    peers_dir: Path | None = Field(None, description="Allowlist directory: every NAME.pub in "
                                   "it is peer NAME's key (a mounted Secret, say).")
    topic: str | None = Field(None, description="Federation topic (default: kafka.topic + "
                              "'.federation').")
    every_events: int = Field(50_000, ge=1, description="Publish our model after this many "
                              "learned events (a round costs the loop ~10 ms here: at "
                              "100k events/s, 2 rounds a second)...")
    every_seconds: float = Field(30.0, gt=0, description="...or this many seconds, whichever "
                                 "comes first; each publication is also a merge round.")
    aggregator: Literal["fedavg", "trimmed_mean", "median", "krum", "multi_krum",
                        "centered_clip"] = Field(
        "trimmed_mean", description="How our model and the peers' latest are combined.")
    trim: float = Field(0.25, ge=0, lt=0.5, description="trimmed_mean: share cut at each end.")
    byzantine: int = Field(1, ge=0, description="krum/multi_krum: peers assumed malicious.")
    mix: float = Field(0.5, ge=0, le=1, description="Merge: local = (1-mix) local + mix "
                       "aggregate.")
    proximal_mu: float = Field(0.01, ge=0, description="FedProx pull toward the last aggregate "
                               "while learning locally (mu/2 * ||w - w_agg||^2): keeps local "
                               "steps near the consensus without erasing a drift adaptation.")
    staleness_exponent: float = Field(0.5, ge=0, description="A peer's weight is samples * "
                                      "(1 + age in rounds) ** -exponent (FedAsync).")
    max_age_seconds: float = Field(300.0, gt=0, description="Older updates are rejected "
                                   "(stale); peers heard from within it count as live.")
    outlier_factor: float = Field(3.0, ge=0, description="Robust aggregators (all but fedavg) "
                                  "first drop peers farther from our model than this x the "
                                  "median peer distance (counted as oversize_norm); 0: never.")
    max_distance: float = Field(1e3, gt=0, description="Reject a peer model farther than this "
                                "(L2, in our frame) from ours: oversize_norm.")
    float16: bool = Field(True, description="Send float32 weights as float16 (half the bytes).")
    federation_id: str | None = Field(None, description="Signed into every update: an "
                                      "update published in another federation is rejected "
                                      "(wrong_federation). Default: the federation topic.")
    max_samples: int = Field(1_000_000, ge=1, description="A peer's claimed sample count is "
                             "capped at this when weighting (fedavg): no peer outweighs the "
                             "rest by claiming more.")

    @property
    def enabled(self) -> bool:
        return self.private_key_file is not None and bool(self.peers or self.peers_dir)

//! Pools: round-robin and least-connections over real upstreams.

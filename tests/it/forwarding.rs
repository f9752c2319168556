//! What reaches the upstream and what comes back: headers, bodies, upgrades.

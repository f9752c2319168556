//! ACME (RFC 8555) certificate management with instant-acme: the account,
//! one order per host, challenge answers, storage and the renewal loop.

pub mod challenges;

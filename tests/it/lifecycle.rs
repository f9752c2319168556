//! Start, drain and exit.

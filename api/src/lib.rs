//! Wire types (being written).

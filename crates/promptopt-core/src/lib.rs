//! promptopt-core (under construction).

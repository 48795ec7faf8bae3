//! promptopt-engine (under construction).

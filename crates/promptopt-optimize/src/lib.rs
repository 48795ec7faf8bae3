//! promptopt-optimize (under construction).

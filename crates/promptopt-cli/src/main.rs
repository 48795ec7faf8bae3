//! The `promptopt` command line.

fn main() -> anyhow::Result<()> {
    Ok(())
}

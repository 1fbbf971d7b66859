//! Prints each overlay mount and the container it belongs to: `cargo run --example resolve`.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut r = overlay_trace::enrich::containers::Resolver::new()?;
    let mut io = overlay_trace::enrich::budget::Budgeted::new("resolve", Default::default());
    for m in overlay_trace::enrich::mountinfo::read_overlay_mounts()?.values() {
        println!(
            "{} {} -> {:?}",
            m.dev,
            m.mount_point,
            r.resolve(m, &mut io).await
        );
    }
    if let Some(w) = r.docker_warning() {
        println!("warning: {w}");
    }
    Ok(())
}

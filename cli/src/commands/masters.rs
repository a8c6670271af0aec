//! `cloudos master remove NAME`: a master leaves the masters (its etcd member is removed;
//! it stops on its own). `cloudos status` lists the masters and their etcd members.

use super::Ctx;

pub async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.remove_master(name).await?;
    println!(
        "master {name} removed: its etcd member left the cluster, and it stops within seconds \
         (it does not start again as a master)"
    );
    Ok(())
}

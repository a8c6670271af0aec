//! The etcd cluster's members: listing them, and adding one for a master that joins.

use super::EtcdStore;
use crate::StoreError;

/// One member as etcd lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    /// Empty until the member first started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl MemberInfo {
    fn of(member: &etcd_client::Member) -> MemberInfo {
        MemberInfo {
            id: member.id(),
            name: member.name().to_owned(),
            peer_urls: member.peer_urls().to_vec(),
            client_urls: member.client_urls().to_vec(),
        }
    }
}

impl EtcdStore {
    /// The members of the etcd cluster.
    pub fn members(&self) -> Result<Vec<MemberInfo>, StoreError> {
        let cluster = self.client.cluster_client();
        let response = self.read("list the etcd members", || {
            let mut cluster = cluster.clone();
            async move { cluster.member_list().await }
        })?;
        Ok(response.members().iter().map(MemberInfo::of).collect())
    }

    /// Adds a member reached at `peer_url` (it must start with the returned list as its
    /// initial cluster, as an existing cluster's member); returns every member, the new
    /// one included. etcd refuses while the cluster has no quorum, or when the new
    /// member would take the quorum away (a member that never started).
    pub fn add_member(&self, peer_url: &str) -> Result<Vec<MemberInfo>, StoreError> {
        let cluster = self.client.cluster_client();
        let urls = vec![peer_url.to_owned()];
        let response = self.request("add an etcd member", || {
            let (mut cluster, urls) = (cluster.clone(), urls.clone());
            async move { cluster.member_add(urls, None).await }
        })?;
        Ok(response.member_list().iter().map(MemberInfo::of).collect())
    }

    /// Removes member `id` from the etcd cluster.
    pub fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        let cluster = self.client.cluster_client();
        self.request("remove an etcd member", || {
            let mut cluster = cluster.clone();
            async move { cluster.member_remove(id).await }
        })?;
        Ok(())
    }
}

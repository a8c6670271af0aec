//! Advertising a master as `<instance>._cloudos._tcp.local.` with libmdns
//! (docs/design.md decision 8). Owns one responder thread per advertisement; knows
//! nothing of browsing or of how the master learns its own pin.
//!
//! What libmdns does, measured and read from its source (0.10), and what follows:
//! - It binds `0.0.0.0:5353` (and `[::]:5353`) with `SO_REUSEPORT` and joins
//!   224.0.0.251 on every interface that has a non-loopback IPv4 address *when it
//!   starts*. Start advertising after the LAN address is configured, and start
//!   again (drop the handle, then start) when the interfaces change.
//! - It sets no outgoing interface, so its IPv4 multicast leaves through the
//!   route to 224.0.0.251, normally the default route: one LAN per master. With
//!   no such route every IPv4 send fails (`network is unreachable`, a libmdns
//!   warning in the log) and only IPv6 link-local answers get out (measured in a
//!   netns test); a master without a default route needs `224.0.0.0/4 dev <lan>`.
//! - A/AAAA answers for `<host>.local` list every non-loopback address present at
//!   query time, or only those passed to [`Advertiser::addresses`]: A records over IPv4,
//!   AAAA records (link-local ones too) over IPv6, where it joins ff02::fb on every
//!   interface that had an IPv6 address at start.
//! - Its IPv4 side must start or the whole responder fails: on an IPv6-only LAN the
//!   host still needs the `224.0.0.0/4 dev <lan>` route (the node's net service adds it;
//!   no IPv4 address is needed).
//! - Every record has a 60 s TTL and no cache-flush bit; avahi and mdns-sd take
//!   them as they are (see tests/), but a browser may list a master's old address
//!   for up to 60 s after it changes.
//! - One unsolicited announcement on start, no probing for name conflicts:
//!   instance names must be unique, so include the host name in them.
//! - On drop of the registration it sends goodbyes (TTL 0 PTR/SRV/TXT), but drops
//!   them if the responder is shut down in the same breath; [`AdvertiseHandle`]
//!   gives it [`GOODBYE_GRACE`] in between.

use std::net::IpAddr;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use libmdns::Responder;
use tokio::sync::oneshot;

use crate::txt::{build_txt, check_instance, checked_host};
use crate::DiscoveryError;

/// The service type as libmdns wants it (it appends `.local`).
const LIBMDNS_SERVICE_TYPE: &str = "_cloudos._tcp";

/// How long the responder keeps running after the service is withdrawn, so that
/// its goodbye packets are sent before the responder shuts down.
pub const GOODBYE_GRACE: Duration = Duration::from_millis(200);

/// What a master says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterAd {
    /// DNS-SD instance name, e.g. `cloudos prod master-1`: up to 62 bytes, no dots.
    pub instance: String,
    /// Cluster name.
    pub cluster: String,
    /// The first 16 hex characters of the CA pin; see [`crate::pin_prefix`].
    pub pin_prefix: String,
    /// The port of the master's API. Also the SRV port.
    pub port: u16,
    /// The nodeos version.
    pub version: String,
}

/// Where and under which host name to advertise. The default uses the kernel's
/// host name (first label) and every non-loopback address.
#[derive(Debug, Clone, Default)]
pub struct Advertiser {
    host: Option<String>,
    addresses: Vec<IpAddr>,
}

impl Advertiser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The host label advertised as `<host>.local` in SRV and A records.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Limit the A/AAAA answers to these addresses (e.g. the LAN address only,
    /// not a container bridge's). Empty means every non-loopback address.
    pub fn addresses(mut self, addresses: Vec<IpAddr>) -> Self {
        self.addresses = addresses;
        self
    }

    /// Starts a responder thread advertising `ad`; it runs until the handle is dropped.
    pub fn start(&self, ad: &MasterAd) -> Result<AdvertiseHandle, DiscoveryError> {
        check_instance(&ad.instance)?;
        if ad.port == 0 {
            return Err(DiscoveryError::InvalidPort);
        }
        let txt = build_txt(&ad.cluster, &ad.pin_prefix, ad.port, &ad.version)?;
        let host = match &self.host {
            Some(host) => checked_host(host)?,
            None => checked_host(&kernel_host_label()?)?,
        };
        let service = Registration {
            host,
            addresses: self.addresses.clone(),
            instance: ad.instance.clone(),
            port: ad.port,
            txt,
        };

        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("mdns-advertise".to_owned())
            .spawn(move || service.run(ready_tx, stop_rx))
            .map_err(DiscoveryError::Thread)?;

        let started = ready_rx.recv();
        match started {
            Ok(Ok(())) => Ok(AdvertiseHandle {
                instance: ad.instance.clone(),
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                join(thread);
                Err(err)
            }
            Err(mpsc::RecvError) => {
                join(thread);
                Err(DiscoveryError::ResponderGone)
            }
        }
    }
}

/// A running advertisement. Dropping it (or [`AdvertiseHandle::stop`]) withdraws
/// the service with goodbye packets; that blocks for about [`GOODBYE_GRACE`].
#[derive(Debug)]
pub struct AdvertiseHandle {
    instance: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdvertiseHandle {
    /// The advertised instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Withdraws the service and waits for the responder thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the thread is gone already; joining tells the rest.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            join(thread);
        }
    }
}

impl Drop for AdvertiseHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn join(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        log::error!("mdns responder thread panicked; the advertisement is gone");
    }
}

/// The first label of the kernel's host name (UTS namespace aware).
fn kernel_host_label() -> Result<String, DiscoveryError> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let label = name.trim().split('.').next().unwrap_or_default();
    if label.is_empty() || label == "localhost" {
        return Err(DiscoveryError::InvalidHost {
            name: name.trim().to_owned(),
            reason: "the kernel host name is unset; set it or pass Advertiser::host",
        });
    }
    Ok(label.to_owned())
}

/// Everything the responder thread needs, checked beforehand so that libmdns'
/// own asserts (label and TXT lengths) cannot fire.
struct Registration {
    host: String,
    addresses: Vec<IpAddr>,
    instance: String,
    port: u16,
    txt: Vec<String>,
}

impl Registration {
    /// The responder thread: its own current-thread runtime, so that neither the
    /// caller's runtime nor libmdns' panicking `Responder::new` is involved.
    fn run(self, ready: mpsc::SyncSender<Result<(), DiscoveryError>>, stop: oneshot::Receiver<()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = ready.send(Err(DiscoveryError::Thread(err)));
                return;
            }
        };
        runtime.block_on(async move {
            let handle = tokio::runtime::Handle::current();
            let responder = Responder::spawn_with_ip_list_and_hostname(
                &handle,
                self.addresses,
                self.host.clone(),
            );
            let responder = match responder {
                Ok(responder) => responder,
                Err(err) => {
                    let _ = ready.send(Err(DiscoveryError::Responder(err)));
                    return;
                }
            };
            let txt: Vec<&str> = self.txt.iter().map(String::as_str).collect();
            let service = responder.register(LIBMDNS_SERVICE_TYPE, &self.instance, self.port, &txt);
            log::info!(
                "advertising {:?} on {}.local port {} ({})",
                self.instance,
                self.host,
                self.port,
                self.txt.join(" ")
            );
            if ready.send(Ok(())).is_err() {
                return;
            }
            // Sent or dropped, the handle is done with us either way.
            let _ = stop.await;
            drop(service);
            tokio::time::sleep(GOODBYE_GRACE).await;
            drop(responder);
            tokio::task::yield_now().await;
            log::info!("withdrew {:?}", self.instance);
        });
    }
}

//! How much an image may make the node download, write and hold in memory: the caps
//! that stop image bombs (a registry that sends more than it declared, a small layer
//! that unpacks to terabytes, millions of empty entries, a giant PAX record). One
//! [`Limits`] value travels with the [`ImageStore`](crate::ImageStore); pulls and unpacking read it.

/// The caps applied to every image the store takes in. The defaults sit well above the
/// largest images in common use (CUDA and PyTorch images have layers of about 3.5 GiB
/// compressed, 7 GiB and 200 000 files unpacked) and well below what fills a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob a manifest may declare. A pull refuses a bigger declaration before
    /// downloading, and stops a download as soon as more bytes arrive than declared.
    pub max_blob_bytes: u64,
    /// Largest sum of the declared sizes of one image's config and layers.
    pub max_image_bytes: u64,
    /// Most layers one image may have (overlayfs stacks about 128 at most anyway).
    pub max_layers: usize,
    /// Largest uncompressed tar stream of one layer: what a gzip or zstd bomb hits.
    pub max_layer_unpacked_bytes: u64,
    /// Most tar headers in one layer (entries, long names and PAX records all count).
    pub max_layer_entries: u64,
    /// Largest GNU long-name or PAX record, read into memory whole. PATH_MAX is 4 KiB;
    /// PAX records with a few extended attributes stay far below this.
    pub max_header_record_bytes: u64,
}

const GIB: u64 = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blob_bytes: 4 * GIB,
            max_image_bytes: 16 * GIB,
            max_layers: 128,
            max_layer_unpacked_bytes: 8 * GIB,
            max_layer_entries: 1_000_000,
            max_header_record_bytes: 1 << 20,
        }
    }
}

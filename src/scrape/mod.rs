//! Scraping: the tick loop, the kubelet client (and its connections) and the kubelet text
//! decoder.
//! The scraper only writes to the store; it never talks to the API layer.

pub mod client;
pub mod conn;
pub mod decode;
pub mod scraper;

pub use client::{KubeletAuth, KubeletClient, KubeletClientConfig, ScrapeError};
pub use scraper::{ScrapeState, Scraper, ScraperConfig};

//! The repository: product reads cached with `#[redis_cached]`, writes that invalidate them or
//! update them in place.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, redis_cached};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

/// A product row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Shown on the front page.
    pub featured: bool,
    /// Units in stock.
    pub stock: i64,
    /// Bumped by every write: an update of the cached product keeps the newer of two.
    pub version: i64,
}

/// The most units of one product the service keeps. A stock stays in `0..=MAX_STOCK`, so no
/// sum of a stock and an accepted delta can overflow the database's 64-bit integer.
pub const MAX_STOCK: i64 = 1_000_000;

/// The highest price the service accepts, in cents (a million dollars).
pub const MAX_PRICE_CENTS: i64 = 100_000_000;

/// What can go wrong reading or writing products.
#[derive(Debug)]
pub enum RepoError {
    /// No product with that id.
    NotFound,
    /// The stock cannot go below zero.
    OutOfStock,
    /// The input is outside what the service accepts; the message says which and why.
    Invalid(String),
    /// The database failed.
    Database(sqlx::Error),
}

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoError::NotFound => f.write_str("no such product"),
            RepoError::OutOfStock => f.write_str("out of stock"),
            RepoError::Invalid(why) => f.write_str(why),
            RepoError::Database(e) => write!(f, "database error: {e}"),
        }
    }
}

impl From<sqlx::Error> for RepoError {
    fn from(e: sqlx::Error) -> Self {
        RepoError::Database(e)
    }
}

/// What a write's invalidation or update of the cache said: `Ok(true)` if it removed or
/// changed an entry, `Err` if Redis could not be told.
pub type CacheWrite = Result<bool, cached_redis::Error>;

tokio::task_local! {
    /// Time this request spent in the database, if it read it.
    pub static DB_TIME: std::cell::Cell<Option<Duration>>;
}

/// Products in a database, read through the cache.
#[derive(Debug, Clone)]
pub struct ProductRepo {
    pool: AnyPool,
    cache: Cache,
    db_reads: Arc<AtomicU64>,
}

impl ProductRepo {
    /// A repository over `pool`, caching in `cache`.
    pub fn new(pool: AnyPool, cache: Cache) -> ProductRepo {
        ProductRepo {
            pool,
            cache,
            db_reads: Arc::default(),
        }
    }

    /// The cache the repository reads through.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Database reads so far (every cache miss is one).
    pub fn db_reads(&self) -> u64 {
        self.db_reads.load(Ordering::Relaxed)
    }

    /// Sets the database read counter back to zero.
    pub fn reset_db_reads(&self) {
        self.db_reads.store(0, Ordering::Relaxed);
    }

    /// Counts a database read and records its time for the current request.
    fn note_db_read(&self, started: Instant) {
        self.db_reads.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        let _ = DB_TIME.try_with(|t| t.set(Some(t.get().unwrap_or_default() + took)));
    }

    /// One product, cached for a minute (less up to 10%, so entries do not expire together).
    #[redis_cached(key = "product:<id>", ttl = "60s", jitter = "10%", cache = &self.cache)]
    pub async fn get_product(&self, id: i64) -> Result<Product, RepoError> {
        let started = Instant::now();
        let row = sqlx::query(
            "SELECT id, name, price_cents, featured, stock, version FROM products WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        // A little latency, as a remote database would have.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.note_db_read(started);
        row.map(|r| product(&r))
            .transpose()?
            .ok_or(RepoError::NotFound)
    }

    /// The featured products: fresh for 30 seconds, then served stale for up to 5 minutes
    /// while one refresh runs in the background (see `ProductRepo::featured`).
    pub async fn list_featured(&self) -> Result<Vec<Product>, RepoError> {
        Self::featured(self.clone()).await
    }

    /// How long the featured list stays fresh: `Some(ZERO)` once its TTL is over (it is then
    /// served stale while it is refreshed), `None` if it is not cached.
    pub async fn featured_fresh_for(&self) -> Result<Option<Duration>, cached_redis::Error> {
        self.cache.fresh_for(&Self::featured_key()).await
    }

    /// The featured products, cached for 30 seconds and kept 5 minutes past that: a read that
    /// finds them past their TTL is answered with them at once while one refresh, across every
    /// process, runs in the background. The repository comes by value (it clones cheaply), so
    /// the body borrows nothing from its caller and the refresh can outlive the call.
    #[redis_cached(key = "featured", ttl = "30s", stale = "5m", cache = &repo.cache, skip = "repo")]
    async fn featured(repo: ProductRepo) -> Result<Vec<Product>, RepoError> {
        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT id, name, price_cents, featured, stock, version FROM products WHERE featured = $1 ORDER BY id",
        )
        .bind(1_i64)
        .fetch_all(&repo.pool)
        .await?;
        repo.note_db_read(started);
        Ok(rows.iter().map(product).collect::<Result<_, _>>()?)
    }

    /// Every product, in id order: the ids from the database, the products through
    /// [`ProductRepo::get_products`], so the ones already cached are not read again (the HTTP
    /// layer caches the route that lists them too).
    pub async fn list_all(&self) -> Result<Vec<Product>, RepoError> {
        let started = Instant::now();
        let ids: Vec<i64> = sqlx::query("SELECT id FROM products ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        self.note_db_read(started);
        let mut found = self.get_products(&ids).await?;
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Products by id, each cached under `get_product`'s entry: one `MGET` reads them all,
    /// and one query reads those not cached (the body is given only those). A product deleted
    /// since its id was read is left out.
    #[redis_cached(key = "product:<id>", ttl = "60s", jitter = "10%", cache = &self.cache, batch)]
    pub async fn get_products(&self, ids: &[i64]) -> Result<HashMap<i64, Product>, RepoError> {
        let started = Instant::now();
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, name, price_cents, featured, stock, version FROM products WHERE id IN ({})",
            marks.join(", ")
        );
        let query = ids
            .iter()
            .fold(sqlx::query(&sql), |query, id| query.bind(*id));
        let rows = query.fetch_all(&self.pool).await?;
        // A little latency, as a remote database would have: once for all of them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.note_db_read(started);
        let products = rows.iter().map(product);
        Ok(products
            .map(|p| p.map(|p| (p.id, p)))
            .collect::<Result<_, _>>()?)
    }

    /// Changes a price, then invalidates what cached it. Returns the product as stored and what
    /// the invalidation said: whether an entry was removed, or the error (logged too) when
    /// Redis could not be told (the invalidation is then kept and replayed when Redis answers
    /// again). The write itself succeeded either way.
    pub async fn set_price(
        &self,
        id: i64,
        price_cents: i64,
    ) -> Result<(Product, CacheWrite), RepoError> {
        if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
            return Err(RepoError::Invalid(format!(
                "price_cents must be between 0 and {MAX_PRICE_CENTS}"
            )));
        }
        let updated = sqlx::query(
            "UPDATE products SET price_cents = $1, version = version + 1 WHERE id = $2",
        )
        .bind(price_cents)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(RepoError::NotFound);
        }
        let removed = self.invalidate_get_product(id).await;
        if let Err(e) = &removed {
            tracing::warn!(error = %e, id, "could not invalidate the cached product");
        }
        if let Err(e) = Self::invalidate_featured(self.clone()).await {
            tracing::warn!(error = %e, "could not invalidate the featured list");
        }
        let product = self.get_product(id).await?;
        Ok((product, removed))
    }

    /// Changes the stock by `delta` (at most [`MAX_STOCK`] either way; the stock stays in
    /// `0..=MAX_STOCK`, so the database never has to hold a sum its integer cannot), then writes the committed stock into the cached product in
    /// place (`update_get_product`) instead of invalidating it: the next read is still a hit.
    /// Returns the product and whether the cached entry was changed (`false`: it was not
    /// cached, or a newer load replaced it), or the error (logged too) when Redis could not be
    /// told.
    pub async fn change_stock(
        &self,
        id: i64,
        delta: i64,
    ) -> Result<(Product, CacheWrite), RepoError> {
        if !(-MAX_STOCK..=MAX_STOCK).contains(&delta) {
            return Err(RepoError::Invalid(format!(
                "delta must be between -{MAX_STOCK} and {MAX_STOCK}"
            )));
        }
        let committed = sqlx::query(
            "UPDATE products SET stock = stock + $1, version = version + 1 WHERE id = $2 AND stock + $1 BETWEEN 0 AND $3 RETURNING stock, version",
        )
        .bind(delta)
        .bind(id)
        .bind(MAX_STOCK)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = committed else {
            return Err(self.why_unchanged(id, delta).await);
        };
        let (stock, version): (i64, i64) = (row.try_get("stock")?, row.try_get("version")?);
        // The values the write committed, not `+= delta`: a load that ran after the write
        // already has them, and setting them again is harmless where adding again is not. The
        // version keeps the newer of two sales whose updates land out of order.
        let change = |p: &mut Product| {
            if p.version < version {
                (p.stock, p.version) = (stock, version);
            }
        };
        let updated = self.update_get_product(id, change).await;
        if let Err(e) = &updated {
            tracing::warn!(error = %e, id, "could not update the cached product");
        }
        if let Err(e) = Self::invalidate_featured(self.clone()).await {
            tracing::warn!(error = %e, "could not invalidate the featured list");
        }
        let product = self.get_product(id).await?;
        Ok((product, updated))
    }

    /// Why a change of the stock by `delta` wrote nothing: no such product, not enough stock,
    /// or more than [`MAX_STOCK`].
    async fn why_unchanged(&self, id: i64, delta: i64) -> RepoError {
        match self.get_product(id).await {
            Ok(p) if p.stock.saturating_add(delta) < 0 => RepoError::OutOfStock,
            Ok(_) => {
                RepoError::Invalid(format!("the stock of a product can be at most {MAX_STOCK}"))
            }
            Err(e) => e,
        }
    }
}

fn product(row: &sqlx::any::AnyRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        featured: row.try_get::<i64, _>("featured")? != 0,
        stock: row.try_get("stock")?,
        version: row.try_get("version")?,
    })
}

/// Creates the table and seeds it when empty.
pub async fn migrate(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS products (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price_cents BIGINT NOT NULL, featured INTEGER NOT NULL, stock BIGINT NOT NULL DEFAULT 20, version BIGINT NOT NULL DEFAULT 1)",
    )
    .execute(pool)
    .await?;
    // A database created before products had these columns gets them.
    for (column, default) in [("stock", 20), ("version", 1)] {
        let probe = format!("SELECT {column} FROM products LIMIT 1");
        if sqlx::query(&probe).fetch_optional(pool).await.is_err() {
            let add = format!(
                "ALTER TABLE products ADD COLUMN {column} BIGINT NOT NULL DEFAULT {default}"
            );
            sqlx::query(&add).execute(pool).await?;
        }
    }
    repair_stock(pool).await?;
    seed(pool).await
}

/// Brings every stock back into `0..=MAX_STOCK`: a build that did not check deltas let SQLite
/// turn an overflowing sum into a REAL, which no later read of the row (or of the catalog)
/// survived, across restarts.
async fn repair_stock(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let repaired = sqlx::query(
        "UPDATE products SET stock = CASE WHEN stock < 0 THEN 0 ELSE $1 END, version = version + 1 WHERE stock < 0 OR stock > $1",
    )
    .bind(MAX_STOCK)
    .execute(pool)
    .await?;
    if repaired.rows_affected() > 0 {
        tracing::warn!(
            rows = repaired.rows_affected(),
            "repaired stock outside 0..={MAX_STOCK} (left by an unchecked delta)"
        );
    }
    Ok(())
}

/// Seeds the table when it is empty.
async fn seed(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM products")
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    if count == 0 {
        let seed = [
            (1, "Espresso beans, 1 kg", 2490, true),
            (2, "Pour-over kettle", 5900, true),
            (3, "Ceramic dripper", 2200, false),
            (4, "Burr grinder", 14900, true),
            (5, "Paper filters, 100", 590, false),
        ];
        for (id, name, price, featured) in seed {
            sqlx::query(
                "INSERT INTO products (id, name, price_cents, featured) VALUES ($1, $2, $3, $4)",
            )
            .bind(id as i64)
            .bind(name)
            .bind(price as i64)
            .bind(i64::from(featured))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

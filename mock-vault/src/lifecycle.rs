//! The lifecycle keys, secrets and certificates share: list, list versions, get, update of
//! attributes and tags, soft delete, the deleted collection, recover and purge.
//!
//! Each kind implements [`Versioned`] in its own module with what differs: its JSON, the
//! kind-specific fields of an update, the key and secret a certificate carries along. The
//! routes, permissions, status codes, errors and recovery fields are written once, here.

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply, tags_from};
use crate::identity::ObjectKind;
use crate::store::{
    Collection, Deleted, RECOVERABLE_DAYS, Tags, Vault, VaultCell, find_version, find_version_mut,
    now,
};

/// One version of a key, secret or certificate.
pub trait Version: Clone {
    /// The 32-hex version id.
    fn id(&self) -> &str;
    /// Its tags, which an update replaces.
    fn tags_mut(&mut self) -> &mut Tags;
}

/// The body of `PATCH /{collection}/{name}/{version}`.
pub trait UpdateRequest: DeserializeOwned {
    /// The `tags` member, when given.
    fn tags(&self) -> Option<&Value>;
}

/// A key, secret or certificate with all its versions, as the store keeps it.
pub trait Versioned: Sized {
    /// One version.
    type Version: Version;
    /// What is soft-deleted and recovered along with the object.
    type Backing;
    /// The body of an update.
    type Update: UpdateRequest;

    /// The permission family.
    const KIND: ObjectKind;
    /// The first path segment, e.g. `keys`; the deleted collection is `deleted` + this.
    const PATH: &'static str;
    /// The object in messages, e.g. `Key`.
    const NOUN: &'static str;
    /// The permission an update needs.
    const UPDATE_PERMISSION: &'static str;

    /// The vault's objects of this kind, live and soft-deleted.
    fn collection(vault: &Vault) -> &Collection<Self, Self::Backing>;
    /// Mutable [`Versioned::collection`].
    fn collection_mut(vault: &mut Vault) -> &mut Collection<Self, Self::Backing>;

    /// The name as created.
    fn name(&self) -> &str;
    /// Versions, oldest first.
    fn versions(&self) -> &[Self::Version];
    /// Mutable [`Versioned::versions`].
    fn versions_mut(&mut self) -> &mut [Self::Version];
    /// Backs a certificate: changed and deleted only through it.
    fn managed(&self) -> bool {
        false
    }

    /// The JSON of one version, as get, update, delete and recover answer it.
    fn bundle(&self, ctx: &Ctx<'_>, version: &Self::Version) -> Value;
    /// A list item: the object with its latest version's attributes (`None`), or one
    /// version. `None` when there is nothing to show.
    fn list_item(&self, ctx: &Ctx<'_>, version: Option<&Self::Version>) -> Option<Value>;

    /// Answers `GET /{collection}/{name}[/{version}]`.
    fn get(ctx: &Ctx<'_>, vault: &Vault, name: &str, version: Option<&str>) -> ApiResult {
        let (entry, v) = find::<Self>(vault, name, version)?;
        Ok(Reply::ok(entry.bundle(ctx, v)))
    }

    /// Applies an update's attributes and kind-specific fields (tags are applied after).
    fn apply_update(version: &mut Self::Version, req: &Self::Update);
    /// Runs after an update, with the updated version.
    fn after_update(_vault: &mut Vault, _lower: &str, _version: &Self::Version) {}
    /// Takes what goes along with a deleted object out of the vault.
    fn detach(vault: &mut Vault, lower: &str) -> Self::Backing;
    /// Puts it back when the object is recovered.
    fn reattach(vault: &mut Vault, lower: &str, backing: Self::Backing);
}

/// Answers the lifecycle routes of `T`'s collections; any other method on them is a 405.
/// Kind-specific routes are matched before this is called.
pub fn handle<T: Versioned>(ctx: &Ctx<'_>, cell: &VaultCell) -> ApiResult {
    let m = ctx.method;
    let (deleted, rest) = match ctx.segments.split_first() {
        Some((first, rest)) if *first == T::PATH => (false, rest),
        Some((first, rest)) if first.strip_prefix("deleted") == Some(T::PATH) => (true, rest),
        _ => return Err(ApiError::no_route(m, &ctx.segments.join("/"))),
    };
    let k = T::KIND;
    match (deleted, rest) {
        (false, [] | [""]) if m == Method::GET => {
            ctx.require(k, "list")?;
            let items = cell.read(|v| {
                T::collection(v)
                    .live
                    .values()
                    .filter_map(|e| e.list_item(ctx, None))
                    .collect()
            });
            ctx.page(&format!("/{}", T::PATH), items)
        }
        (false, [name, "versions"]) if m == Method::GET => {
            ctx.require(k, "list")?;
            list_versions::<T>(ctx, cell, name)
        }
        (false, [name]) if m == Method::DELETE => {
            ctx.require(k, "delete")?;
            delete::<T>(ctx, cell, name)
        }
        (false, [name]) if m == Method::GET => {
            ctx.require(k, "get")?;
            cell.read(|v| T::get(ctx, v, name, None))
        }
        (false, [name, version]) if m == Method::GET => {
            ctx.require(k, "get")?;
            cell.read(|v| T::get(ctx, v, name, Some(version)))
        }
        (false, [name, version]) if m == Method::PATCH => {
            ctx.require(k, T::UPDATE_PERMISSION)?;
            update::<T>(ctx, cell, name, version)
        }
        (true, []) if m == Method::GET => {
            ctx.require(k, "list")?;
            let items = cell.read(|v| {
                T::collection(v)
                    .deleted
                    .values()
                    .filter_map(|d| {
                        let item = d.entry.list_item(ctx, None)?;
                        Some(with_recovery(ctx, item, d))
                    })
                    .collect()
            });
            ctx.page(&format!("/deleted{}", T::PATH), items)
        }
        (true, [name]) if m == Method::GET => {
            ctx.require(k, "get")?;
            cell.read(|v| {
                let d = T::collection(v)
                    .deleted
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(k, name))?;
                Ok(Reply::ok(deleted_bundle(ctx, d)))
            })
        }
        (true, [name]) if m == Method::DELETE => {
            ctx.require(k, "purge")?;
            cell.write(|v| {
                T::collection_mut(v)
                    .deleted
                    .remove(&name.to_ascii_lowercase())
                    .ok_or_else(|| ApiError::not_found(k, name))?;
                Ok(Reply::with_status(StatusCode::NO_CONTENT, Value::Null))
            })
        }
        (true, [name, "recover"]) if m == Method::POST => {
            ctx.require(k, "recover")?;
            recover::<T>(ctx, cell, name)
        }
        _ => Err(ApiError::method_not_allowed(m)),
    }
}

/// A live object by name, or Key Vault's 404.
pub fn entry<'a, T: Versioned>(vault: &'a Vault, name: &str) -> Result<&'a T, ApiError> {
    T::collection(vault)
        .live
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| ApiError::not_found(T::KIND, name))
}

/// Mutable [`entry`].
pub fn entry_mut<'a, T: Versioned>(
    vault: &'a mut Vault,
    name: &str,
) -> Result<&'a mut T, ApiError> {
    T::collection_mut(vault)
        .live
        .get_mut(&name.to_ascii_lowercase())
        .ok_or_else(|| ApiError::not_found(T::KIND, name))
}

/// A live object and one of its versions (empty or absent: the latest), or Key Vault's 404.
pub fn find<'a, T: Versioned>(
    vault: &'a Vault,
    name: &str,
    version: Option<&str>,
) -> Result<(&'a T, &'a T::Version), ApiError> {
    let e = entry::<T>(vault, name)?;
    let v = find_version(e.versions(), version, Version::id).ok_or_else(|| {
        ApiError::not_found(T::KIND, &format!("{name}/{}", version.unwrap_or("")))
    })?;
    Ok((e, v))
}

/// Refuses a new version while the name is soft-deleted.
pub fn check_not_deleted<T: Versioned>(vault: &Vault, name: &str) -> Result<(), ApiError> {
    if T::collection(vault)
        .deleted
        .contains_key(&name.to_ascii_lowercase())
    {
        return Err(ApiError::conflict(format!(
            "{} {name} is currently in a deleted but recoverable state, and its name cannot be \
             reused; in this state, the {} can only be recovered or purged.",
            T::NOUN,
            T::NOUN.to_ascii_lowercase()
        )));
    }
    Ok(())
}

/// The 409 for a direct change to a key or secret that backs a certificate.
pub fn managed_conflict<T: Versioned>(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "{} {name} backs a certificate and can only be changed through the certificate.",
        T::NOUN
    ))
}

/// The bundle of the latest version, if there is one.
pub fn latest_bundle<T: Versioned>(ctx: &Ctx<'_>, entry: &T) -> Option<Value> {
    entry.versions().last().map(|v| entry.bundle(ctx, v))
}

fn list_versions<T: Versioned>(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    let items = cell.read(|v| {
        let e = entry::<T>(v, name)?;
        Ok::<_, ApiError>(
            e.versions()
                .iter()
                .filter_map(|ver| e.list_item(ctx, Some(ver)))
                .collect(),
        )
    })?;
    ctx.page(&format!("/{}/{name}/versions", T::PATH), items)
}

fn update<T: Versioned>(ctx: &Ctx<'_>, cell: &VaultCell, name: &str, version: &str) -> ApiResult {
    let req: T::Update = ctx.json()?;
    let tags = match req.tags() {
        Some(t) => Some(tags_from(Some(t))?),
        None => None,
    };
    cell.write(|v| {
        let lower = name.to_ascii_lowercase();
        let e = entry_mut::<T>(v, name)?;
        let ver = find_version_mut(e.versions_mut(), Some(version), Version::id)
            .ok_or_else(|| ApiError::not_found(T::KIND, &format!("{name}/{version}")))?;
        T::apply_update(ver, &req);
        if let Some(t) = tags {
            *ver.tags_mut() = t;
        }
        let ver = ver.clone();
        let body = e.bundle(ctx, &ver);
        T::after_update(v, &lower, &ver);
        Ok(Reply::ok(body))
    })
}

fn delete<T: Versioned>(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    cell.write(|v| {
        let lower = name.to_ascii_lowercase();
        if T::collection(v).live.get(&lower).is_some_and(T::managed) {
            return Err(ApiError::forbidden(
                format!(
                    "{} {name} backs a certificate; delete the certificate instead.",
                    T::NOUN
                ),
                &format!("{}Managed", T::NOUN),
            ));
        }
        let entry = T::collection_mut(v)
            .live
            .remove(&lower)
            .ok_or_else(|| ApiError::not_found(T::KIND, name))?;
        let backing = T::detach(v, &lower);
        let deleted = Deleted {
            entry,
            backing,
            deleted_date: now(),
        };
        let body = deleted_bundle(ctx, &deleted);
        T::collection_mut(v).deleted.insert(lower, deleted);
        Ok(Reply::ok(body))
    })
}

fn recover<T: Versioned>(ctx: &Ctx<'_>, cell: &VaultCell, name: &str) -> ApiResult {
    cell.write(|v| {
        let lower = name.to_ascii_lowercase();
        let d = T::collection_mut(v)
            .deleted
            .remove(&lower)
            .ok_or_else(|| ApiError::not_found(T::KIND, name))?;
        let body = latest_bundle(ctx, &d.entry).unwrap_or_else(|| json!({}));
        T::reattach(v, &lower, d.backing);
        T::collection_mut(v).live.insert(lower, d.entry);
        Ok(Reply::ok(body))
    })
}

/// The latest version's bundle with the recovery fields.
fn deleted_bundle<T: Versioned>(ctx: &Ctx<'_>, d: &Deleted<T, T::Backing>) -> Value {
    let body = latest_bundle(ctx, &d.entry).unwrap_or_else(|| json!({}));
    with_recovery(ctx, body, d)
}

/// Adds `recoveryId`, `deletedDate` and `scheduledPurgeDate`.
fn with_recovery<T: Versioned>(
    ctx: &Ctx<'_>,
    mut body: Value,
    d: &Deleted<T, T::Backing>,
) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "recoveryId".into(),
            format!("{}/deleted{}/{}", ctx.base, T::PATH, d.entry.name()).into(),
        );
        obj.insert("deletedDate".into(), d.deleted_date.into());
        obj.insert(
            "scheduledPurgeDate".into(),
            (d.deleted_date + RECOVERABLE_DAYS * 86_400).into(),
        );
    }
    body
}

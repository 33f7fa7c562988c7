"""Server-side apply and field management, as kube-apiserver does them, for the emulator.

Read (not copied) at the versions Kubernetes 1.36 vendors (k8s.io/apimachinery v0.36.3's go.mod pins
sigs.k8s.io/structured-merge-diff/v6 v6.3.3 and kube-openapi 43fb72c5454a):

* structured-merge-diff v6.3.3 (``smd``):
  - ``merge/update.go`` ``Apply`` (209-250): merge the applied config into the live object, the
    applier's set becomes its config's field set, ``prune`` (256-280: remove what it applied last time
    and no longer applies, then ``addBackOwnedItems`` 284-340 puts back what anyone else, or the new
    config, owns, and ``addBackDanglingItems`` 345-366 what it never owned), then ``update`` (73-160):
    compare live and new, every *other* manager's fields that were added or modified are conflicts
    (131-134), refused without force (141-143), taken away from them with force (145-147); removed
    fields leave every manager (149-151); empty managers are dropped (153-157).  ``Update`` (167-204):
    the same ``update`` with force, then the updater owns what it added or modified.
  - ``typed/tofieldset.go``: scalars and atomic lists/maps are leaves (90-94, 137-140, 178-181); every
    associative-list item is a member (126) and duplicates are members without children (104-110); a
    map key is a member when its value is null or ``{}``, or when it is not a declared field (162-166).
  - ``typed/helpers.go`` 200-265: list items are keyed by their ``x-kubernetes-list-map-keys`` values
    (``k:``), set items by their value (``v:``); keys absent from an item are left out.
  - ``typed/merge.go``: atomic values and empty lists/maps are taken whole from the config
    (``ruleKeepRHS`` 59-67, 350-358, 410-418); maps merge key by key (386-399); associative lists merge
    item by item, keeping the live order of items the config does not name (168-283).
  - ``typed/compare.go``: Added/Modified/Removed per leaf, non-leaf nodes that appear or vanish are
    Added/Removed themselves (132-138, 144-162).
  - ``typed/remove.go`` (v6.3.3): removing a path removes the field or item; a prefix recurses.
  - ``fieldpath/set.go`` 132-150 ``EnsureNamedFieldsAreMembers``: a struct field with owned children is
    itself owned for pruning; ``fieldpath/element.go`` 170-188 and ``path.go`` 30-36: the path strings
    of a conflict (``.spec.containers[name="trainer"].image``).
* k8s.io/apimachinery v0.36.3 ``pkg/util/managedfields/internal``:
  - ``managedfields.go`` 133-159: a manager is identified by manager name, operation, subresource and
    (Update only) apiVersion; 194-224: entries sorted by operation, time, manager, apiVersion,
    subresource; ``fields.go``/smd ``fieldpath/serialize.go`` 79-130: FieldsV1 (``f:``, ``k:{...}``,
    ``v:``, ``i:``; ``"."`` for a member that has children); ``pathelement.go`` 30-140.
  - ``stripmeta.go`` 36-53: apiVersion, kind, metadata and metadata.{name,namespace,creationTimestamp,
    selfLink,uid,clusterName,generation,managedFields,resourceVersion} are never owned.
  - ``managedfieldsupdater.go`` 45-67: an Update that changes nothing leaves managedFields alone; one
    that does is merged into the updater's entry, with a new time.
  - ``skipnonapplied.go`` 76-91: the first apply to an object with no managedFields first gives every
    existing field to ``before-first-apply`` (Update); ``fieldmanager.go`` 57-75 tracks from create on
    (probability 1).
  - ``conflict.go`` 33-89: 409 Conflict, reason Conflict, one cause per field
    (``FieldManagerConflict``), message "Apply failed with N conflict(s): conflict(s) with "m": path".
* kube-openapi 43fb72c5454a ``pkg/schemaconv``: ``smd.go`` 269-315 (list types: ``atomic``; ``set``;
  ``map`` with its keys; else ``x-kubernetes-patch-strategy: merge`` with ``x-kubernetes-patch-merge-key``
  (how the built-in kinds' containers/env/volumes/ports merge); else atomic), 319-333
  (``x-kubernetes-map-type``), ``openapi.go`` 86-260 (no type = any; an object without properties or
  under preserve-unknown-fields has deduced elements: maps granular, lists atomic).
* apiextensions-apiserver v0.36.3: ``pkg/apiserver/customresource_handler.go`` 693-695 (no schema:
  the deduced type converter), ``pkg/controller/openapi/builder/builder.go`` 404/454 (a CR's metadata
  is ObjectMeta), ``pkg/registry/customresource/strategy.go`` 132-142 and ``status_strategy.go`` 48-65
  (reset fields: the main resource ignores status, /status ignores metadata and spec).

Built-in kinds use the Kubernetes v1.36 OpenAPI shipped by the ``kubernetes-validate`` package
(``x-kubernetes-list-type``/``-list-map-keys``/``-patch-merge-key``/``-map-type`` as the server has
them); custom resources use their installed CRD's schema, or the deduced type without one.

Not emulated: unions, version conversion of managedFields, the cap of 10 Update managers
(``capmanagers.go``), the last-applied annotation, ``i:`` (never produced: Kubernetes has no
separable lists); a duplicate key in an applied list is refused like smd's ``ObjectToTyped``.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path as FsPath
from typing import Any

Obj = dict[str, Any]
PE = tuple[str, str]  # ("f", name) | ("k", json of the sorted key fields) | ("v", json value) | ("i", index)
FPath = tuple[PE, ...]
FSet = frozenset[FPath]

BEFORE_FIRST_APPLY = "before-first-apply"
_STRIP = frozenset(
    {(("f", "apiVersion"),), (("f", "kind"),), (("f", "metadata"),)}
    | {
        (("f", "metadata"), ("f", n))
        for n in (
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
        )
    }
)


class Conflict(Exception):
    def __init__(self, conflicts: list[tuple[str, FPath]]) -> None:
        super().__init__("conflict")
        self.conflicts = conflicts


class ApplyInvalid(Exception):
    """The applied configuration cannot be typed (e.g. duplicate list-map keys): the server's 422/500."""


# --- types (kube-openapi schemaconv) --------------------------------------------


class Typ:
    """One schema node: what a map, list or scalar value at this place is."""

    __slots__ = (
        "_schema",
        "_deref",
        "preserve",
        "map_atomic",
        "list_kind",
        "keys",
        "_fields",
        "_elem",
        "_items",
        "deduced",
        "untyped",
    )

    def __init__(
        self,
        schema: dict[str, Any] | None,
        deref: Callable[[str], dict[str, Any]],
        preserve: bool = False,
        *,
        deduced: bool = False,
        untyped: bool = False,
        map_type: str | None = None,
    ) -> None:
        self._deref = deref
        self.deduced, self.untyped = deduced, untyped
        s = schema or {}
        ref = s.get("$ref") or (s["allOf"][0].get("$ref") if len(s.get("allOf") or []) == 1 else None)
        if ref:
            map_type = map_type or s.get("x-kubernetes-map-type")
            s = deref(ref)
        self._schema = s
        self.preserve = preserve or bool(s.get("x-kubernetes-preserve-unknown-fields"))
        self.map_atomic = untyped or (map_type or s.get("x-kubernetes-map-type")) == "atomic"
        list_type = s.get("x-kubernetes-list-type")
        self.keys: tuple[str, ...] = ()
        if deduced or untyped:
            self.list_kind = "atomic"
        elif list_type in ("atomic", "set"):
            self.list_kind = list_type
        elif list_type == "map":
            self.list_kind, self.keys = "map", tuple(s.get("x-kubernetes-list-map-keys") or ())
        elif s.get("x-kubernetes-patch-strategy") in ("merge", "merge,retainKeys"):
            key = s.get("x-kubernetes-patch-merge-key")
            self.list_kind, self.keys = ("map", (key,)) if key else ("set", ())
        else:
            self.list_kind = "atomic"
        self._fields: dict[str, Typ] = {}
        self._elem: Typ | None | bool = False
        self._items: Typ | None = None

    def has_field(self, name: str) -> bool:
        return not (self.deduced or self.untyped) and name in (self._schema.get("properties") or {})

    def child(self, name: str) -> Typ:
        """The type of a map's value under ``name`` (a declared field, else the element type)."""
        if self.has_field(name):
            typ = self._fields.get(name)
            if typ is None:
                typ = self._fields[name] = Typ(self._schema["properties"][name], self._deref, self.preserve)
            return typ
        if self._elem is False:
            extra = self._schema.get("additionalProperties")
            if self.untyped:
                self._elem = self
            elif (
                self.deduced
                or self.preserve
                or (isinstance(extra, bool) and extra)
                or (extra is None and not self._schema.get("properties"))
            ):
                self._elem = DEDUCED
            elif isinstance(extra, dict):
                self._elem = Typ(extra, self._deref, self.preserve)
            else:
                self._elem = None
        return self._elem if isinstance(self._elem, Typ) else DEDUCED  # an unknown field: typed as deduced

    def item(self) -> Typ:
        if self._items is None:
            if self.deduced or self.untyped or "items" not in self._schema:
                self._items = UNTYPED
            else:
                self._items = Typ(self._schema["items"], self._deref, self.preserve)
        return self._items


def _no_ref(ref: str) -> dict[str, Any]:
    raise KeyError(ref)


UNTYPED = Typ(None, _no_ref, untyped=True)
DEDUCED = Typ(None, _no_ref, deduced=True)


@functools.lru_cache(maxsize=1)
def _k8s_definitions() -> dict[str, Any]:
    import kubernetes_validate

    root = (
        FsPath(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.36.0-local" / "_definitions.json"
    )
    defs: dict[str, Any] = json.loads(root.read_text(encoding="utf-8"))["$defs"]
    return defs


def _deref_k8s(ref: str) -> dict[str, Any]:
    return dict(_k8s_definitions()[ref.rsplit("/", 1)[-1]])


@functools.lru_cache(maxsize=64)
def builtin_type(api_version: str, kind: str) -> Typ | None:
    """A built-in kind's type from the Kubernetes v1.36 OpenAPI (None: not a built-in kind)."""
    for name, schema in _k8s_definitions().items():
        props = schema.get("properties") or {}
        if (
            name.endswith("." + kind)
            and (props.get("kind") or {}).get("enum") == [kind]
            and (props.get("apiVersion") or {}).get("enum") == [api_version]
        ):
            return Typ(schema, _deref_k8s)
    return None


def crd_type(openapi_schema: dict[str, Any]) -> Typ:
    """A custom resource's type from its CRD's structural schema; metadata is ObjectMeta (builder.go 404)."""
    schema = copy.deepcopy(openapi_schema)
    schema.setdefault("properties", {})["metadata"] = {
        "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    return Typ(schema, _deref_k8s)


def deduced_type() -> Typ:
    """A custom resource without a schema (customresource_handler.go 693), metadata still ObjectMeta."""
    return crd_type({"type": "object", "x-kubernetes-preserve-unknown-fields": True})


# --- path elements ------------------------------------------------------------------


def _key_pe(typ: Typ, item: Any) -> PE:
    if typ.list_kind == "map":
        if not isinstance(item, dict):
            raise ApplyInvalid("associative list with keys may not have non-map elements")
        fields = {k: item[k] for k in typ.keys if k in item}
        if not fields:
            # helpers.go 215-218: a key's schema default stands in for an absent key.
            item_typ = typ.item()
            for k in typ.keys:
                if item_typ.has_field(k) and "default" in item_typ.child(k)._schema:
                    fields[k] = item_typ.child(k)._schema["default"]
        if not fields:
            raise ApplyInvalid(
                f"associative list with keys has an element that omits all key fields {list(typ.keys)!r}"
            )
        return ("k", json.dumps(fields, sort_keys=True, separators=(",", ":")))
    if isinstance(item, (dict, list)) or item is None:
        raise ApplyInvalid("associative list without keys has an element that's a map type, a list or null")
    return ("v", json.dumps(item, separators=(",", ":")))


def pe_string(pe: PE) -> str:
    """fieldpath/element.go 170-188."""
    kind, text = pe
    if kind == "f":
        return "." + text
    if kind == "i":
        return f"[{text}]"
    value = json.loads(text)
    if kind == "v":
        return f"[={_go_string(value)}]"
    return "[" + ",".join(f"{k}={_go_string(v)}" for k, v in sorted(value.items())) + "]"


def _go_string(v: Any) -> str:
    return (
        json.dumps(v)
        if isinstance(v, str)
        else ("true" if v is True else "false" if v is False else "null" if v is None else str(v))
    )


def path_string(path: FPath) -> str:
    return "".join(pe_string(pe) for pe in path)


# --- field sets (tofieldset.go) ------------------------------------------------------------


def field_set(value: Any, typ: Typ) -> set[FPath]:
    out: set[FPath] = set()
    _to_set(value, typ, (), out)
    return out


def _to_set(value: Any, typ: Typ, path: FPath, out: set[FPath]) -> None:
    if isinstance(value, dict):
        if typ.map_atomic:
            out.add(path)
            return
        for key, val in value.items():
            sub = path + (("f", key),)
            _to_set(val, typ.child(key), sub, out)
            if val is None or val == {} or not typ.has_field(key):
                out.add(sub)
    elif isinstance(value, list):
        if typ.list_kind == "atomic":
            out.add(path)
            return
        seen: dict[PE, int] = {}
        pes = []
        for item in value:
            pe = _key_pe(typ, item)
            pes.append(pe)
            seen[pe] = seen.get(pe, 0) + 1
        for pe, item in zip(pes, value):
            sub = path + (pe,)
            if seen[pe] > 1:
                out.add(sub)
                continue
            _to_set(item, typ.item(), sub, out)
            out.add(sub)
    else:
        out.add(path)


def ensure_named(paths: Iterable[FPath], typ: Typ) -> set[FPath]:
    """set.go 132-150: every prefix ending in a declared struct field is a member too."""
    out = set(paths)
    for path in list(out):
        node = typ
        for i, pe in enumerate(path[:-1]):
            if pe[0] == "f":
                if node.has_field(pe[1]):
                    out.add(path[: i + 1])
                node = node.child(pe[1])
            else:
                node = node.item()
    return out


# --- merge (merge.go) ------------------------------------------------------------------------


def merge(lhs: Any, rhs: Any, typ: Typ) -> Any:
    if rhs is None and lhs is None:
        return None
    if isinstance(rhs, dict) and isinstance(lhs, dict):
        if typ.map_atomic or (not lhs and not rhs):
            return copy.deepcopy(rhs)
        out = {}
        for key in list(lhs) + [k for k in rhs if k not in lhs]:
            if key in rhs and key in lhs:
                merged = merge(lhs[key], rhs[key], typ.child(key))
            elif key in rhs:
                merged = copy.deepcopy(rhs[key])
            else:
                merged = copy.deepcopy(lhs[key])
            out[key] = merged
        return out
    if isinstance(rhs, list) and isinstance(lhs, list):
        if typ.list_kind == "atomic" or (not lhs and not rhs):
            return copy.deepcopy(rhs)
        return _merge_list(lhs, rhs, typ)
    return copy.deepcopy(rhs) if rhs is not None or lhs is None else copy.deepcopy(lhs)


def _merge_list(lhs: list[Any], rhs: list[Any], typ: Typ) -> list[Any]:
    """merge.go 168-283: the config's items in its order, the live items it does not name kept in place."""
    r_pes = [_key_pe(typ, v) for v in rhs]
    if len(set(r_pes)) != len(r_pes):
        dup = next(pe for pe in r_pes if r_pes.count(pe) > 1)
        raise ApplyInvalid(f"duplicate entries for key {pe_string(dup)}")
    l_pes = [_key_pe(typ, v) for v in lhs]
    observed_l: dict[PE, Any] = {}
    for pe, v in zip(l_pes, lhs):
        observed_l[pe] = None if pe in observed_l else v  # a duplicated live item is not merged (merge.go 303-311)
    observed_r = dict(zip(r_pes, rhs))
    shared = [pe for pe in r_pes if pe in observed_l]
    next_shared = shared.pop(0) if shared else None
    merged_r: set[PE] = set()
    out: list[Any] = []
    item_typ = typ.item()
    li = ri = 0

    def item(pe: PE, lv: Any, rv: Any) -> None:
        value = merge(lv, rv, item_typ) if rv is not None else copy.deepcopy(lv)
        if value is not None:
            out.append(value)

    while li < len(l_pes) or ri < len(r_pes):
        if li < len(l_pes) and ri < len(r_pes):
            pe = l_pes[li]
            if pe == r_pes[ri]:
                merged_r.add(pe)
                item(pe, observed_l.get(pe), observed_r[pe])
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in observed_r and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < len(l_pes):
            pe = l_pes[li]
            if pe not in observed_r:
                item(pe, lhs[li], None)
                li += 1
                continue
            if pe in merged_r:
                li += 1
        if ri < len(r_pes):
            pe = r_pes[ri]
            merged_r.add(pe)
            item(pe, observed_l.get(pe), observed_r[pe])
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out


# --- compare (compare.go) ------------------------------------------------------------------------


_MISSING = object()


def compare(lhs: Any, rhs: Any, typ: Typ) -> tuple[set[FPath], set[FPath], set[FPath]]:
    """(added, modified, removed) going from lhs to rhs."""
    added: set[FPath] = set()
    modified: set[FPath] = set()
    removed: set[FPath] = set()
    _compare(lhs, rhs, typ, (), added, modified, removed)
    return added, modified, removed


def _compare(
    lhs: Any, rhs: Any, typ: Typ, path: FPath, added: set[FPath], modified: set[FPath], removed: set[FPath]
) -> None:
    value = rhs if rhs is not _MISSING else lhs
    leaf = True
    if isinstance(value, dict) and not typ.map_atomic:
        ld = lhs if isinstance(lhs, dict) else {}
        rd = rhs if isinstance(rhs, dict) else {}
        if ld or rd:
            leaf = False
            for key in set(ld) | set(rd):
                _compare(
                    ld.get(key, _MISSING),
                    rd.get(key, _MISSING),
                    typ.child(key),
                    path + (("f", key),),
                    added,
                    modified,
                    removed,
                )
    elif isinstance(value, list) and typ.list_kind != "atomic":
        ll = lhs if isinstance(lhs, list) else []
        rl = rhs if isinstance(rhs, list) else []
        if ll or rl:
            leaf = False
            lv: dict[PE, list[Any]] = {}
            rv: dict[PE, list[Any]] = {}
            for v in ll:
                lv.setdefault(_key_pe(typ, v), []).append(v)
            for v in rl:
                rv.setdefault(_key_pe(typ, v), []).append(v)
            item_typ = typ.item()
            for pe in list(lv) + [p for p in rv if p not in lv]:
                a, b = lv.get(pe, []), rv.get(pe, [])
                sub = path + (pe,)
                if len(a) <= 1 and len(b) <= 1:
                    _compare(a[0] if a else _MISSING, b[0] if b else _MISSING, item_typ, sub, added, modified, removed)
                elif len(a) >= 2 and len(b) >= 2:
                    if a != b:
                        modified.add(sub)
                elif len(a) >= 2:
                    if b:
                        _compare(_MISSING, b[0], item_typ, sub, added, modified, removed)
                    removed.add(sub)
                else:
                    if a:
                        _compare(a[0], _MISSING, item_typ, sub, added, modified, removed)
                    added.add(sub)
    if not path:
        return
    if lhs is _MISSING:
        added.add(path)
    elif rhs is _MISSING:
        removed.add(path)
    elif leaf and lhs != rhs:
        modified.add(path)


# --- remove (remove.go) -----------------------------------------------------------------------------


def _trie(paths: Iterable[FPath]) -> dict[PE, Any]:
    root: dict[PE, Any] = {}
    for path in paths:
        node = root
        for pe in path[:-1]:
            node = node.setdefault(pe, [False, {}])[1]
        node.setdefault(path[-1], [False, {}])[0] = True
    return root


def remove(value: Any, paths: Iterable[FPath], typ: Typ) -> Any:
    return _remove(value, _trie(paths), typ)


def _remove(value: Any, trie: dict[PE, Any], typ: Typ) -> Any:
    if not trie:
        return value
    if isinstance(value, dict):
        if typ.map_atomic:
            return value
        out = {}
        for key, val in value.items():
            node = trie.get(("f", key))
            if node is None:
                out[key] = val
            elif not node[0]:
                sub = _remove(val, node[1], typ.child(key))
                if sub is not None or val is None:
                    out[key] = sub
        return out or None
    if isinstance(value, list):
        if typ.list_kind == "atomic" or not value:
            return value
        items = []
        for item in value:
            node = trie.get(_key_pe(typ, item))
            if node is None:
                items.append(item)
            elif not node[0]:
                sub = _remove(item, node[1], typ.item())
                if sub is not None:
                    items.append(sub)
        return items or None
    return value


# --- the updater (merge/update.go) ---------------------------------------------------------------------------


class Managers(dict[str, tuple[frozenset[FPath], bool, str, str | None]]):
    """manager identifier -> (field set, applied, apiVersion, time)."""


def _exclude(paths: set[FPath], reset: tuple[FPath, ...]) -> set[FPath]:
    """fieldpath RecursiveDifference with the reset fields (the strategies' GetResetFields)."""
    if not reset:
        return paths
    return {p for p in paths if not any(p[: len(r)] == r for r in reset)}


def _update(
    live: Obj, new: Obj, typ: Typ, managers: Managers, workflow: str, force: bool, reset: tuple[FPath, ...]
) -> tuple[Managers, set[FPath], set[FPath], set[FPath]]:
    added, modified, removed = compare(live, new, typ)
    added, modified, removed = _exclude(added, reset), _exclude(modified, reset), _exclude(removed, reset)
    changed = added | modified
    conflicts = {m: s & changed for m, (s, *_) in managers.items() if m != workflow and s & changed}
    if conflicts and not force:
        raise Conflict(
            sorted(((m, p) for m, paths in conflicts.items() for p in paths), key=lambda c: (c[0], path_string(c[1])))
        )
    out = Managers()
    for m, (s, applied, version, when) in managers.items():
        if m != workflow:
            s = s - changed - removed
        if s:
            out[m] = (frozenset(s), applied, version, when)
    if workflow in managers:
        out[workflow] = managers[workflow]
    return out, added, modified, removed


def manager_id(manager: str, operation: str, api_version: str, subresource: str) -> str:
    """managedfields.go 133-159: Apply entries are not told apart by apiVersion."""
    entry = {"manager": manager or "unknown", "operation": operation}
    if operation == "Update":
        entry["apiVersion"] = api_version
    if subresource:
        entry["subresource"] = subresource
    return json.dumps(entry, sort_keys=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip(paths: Iterable[FPath]) -> frozenset[FPath]:
    return frozenset(p for p in paths if p not in _STRIP)


def _comparable(obj: Obj | None) -> Obj:
    obj = copy.deepcopy(obj or {})
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def update(
    live: Obj | None,
    new: Obj,
    typ: Typ,
    managers: Managers,
    manager: str,
    api_version: str,
    subresource: str,
    reset: tuple[FPath, ...],
) -> Managers:
    """A create/update/patch by ``manager``: it owns what it changed (managedfieldsupdater.go 45-67)."""
    ident = manager_id(manager, "Update", api_version, subresource)
    self = "current-operation"
    managers, added, modified, _ = _update(_comparable(live), _comparable(new), typ, managers, self, True, reset)
    owned = _strip(added | modified)
    if owned:
        previous = managers.get(ident)
        managers[ident] = (owned | (previous[0] if previous else frozenset()), False, api_version, _now())
    return managers


def apply(
    live: Obj | None,
    config: Obj,
    typ: Typ,
    managers: Managers,
    manager: str,
    api_version: str,
    subresource: str,
    force: bool,
    reset: tuple[FPath, ...],
) -> tuple[Obj, Managers]:
    """merge/update.go Apply: the merged object and the managers after it (raises Conflict)."""
    ident = manager_id(manager, "Apply", api_version, subresource)
    live_c = _comparable(live)
    if live is not None and not managers:  # skipnonapplied.go 76-91
        managers = update({}, live_c, typ, managers, BEFORE_FIRST_APPLY, api_version, "", reset)
    config = _comparable(config)
    merged = merge(live_c, config, typ)
    last = managers.get(ident)
    cfg_set = _exclude(field_set(config, typ), reset)
    managers = Managers(managers)
    managers[ident] = (frozenset(cfg_set), True, api_version, None)
    if last is not None and last[0]:
        merged = _prune(merged, managers, last[0], typ)
    managers, *_ = _update(live_c, merged, typ, managers, ident, force, reset)
    changed = merged != live_c
    s = _strip(managers[ident][0])
    previous_time = last[3] if last is not None else None
    if s:
        managers[ident] = (s, True, api_version, _now() if changed or previous_time is None else previous_time)
    else:
        managers.pop(ident)
    return merged, managers


def _prune(merged: Obj, managers: Managers, last: frozenset[FPath], typ: Typ) -> Obj:
    last_e = ensure_named(last, typ)
    pruned = remove(merged, last_e, typ) or {}
    managed: set[FPath] = set()
    for s, *_ in managers.values():
        managed |= s
    merged_set = ensure_named(field_set(merged, typ), typ)
    pruned_set = ensure_named(field_set(pruned, typ), typ)
    pruned = remove(merged, merged_set - (pruned_set | ensure_named(managed, typ)), typ) or {}
    pruned_set = ensure_named(field_set(pruned, typ), typ)
    out: Obj = remove(merged, (merged_set - pruned_set) & last_e, typ) or {}
    return out


# --- wire format (managedfields.go, fieldpath/serialize.go) --------------------------------------------------


def _pe_key(pe: PE) -> str:
    kind, text = pe
    if kind == "k":
        return "k:" + json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
    return f"{kind}:{text}"


def to_fields_v1(paths: Iterable[FPath]) -> Obj:
    """serialize.go 79-130: a trie of path elements; a member that also has children carries ``"."``."""
    root: dict[PE, Any] = _trie(paths)

    def emit(node: dict[PE, Any]) -> Obj:
        out: Obj = {}
        for pe, (member, children) in node.items():
            child = emit(children)
            if member and child:
                child = {".": {}, **child}
            out[_pe_key(pe)] = child
        return out

    return _sorted_fields(emit(root))


def _sorted_fields(node: Obj) -> Obj:
    order = {"f": 0, "k": 1, "v": 2, "i": 3}
    keys = sorted(node, key=lambda k: (-1, "") if k == "." else (order.get(k[0], 9), k[2:]))
    return {k: _sorted_fields(node[k]) for k in keys}


def _parse_pe(key: str) -> PE:
    kind, _, text = key.partition(":")
    if kind == "k":
        return ("k", json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")))
    if kind == "v":
        return ("v", json.dumps(json.loads(text), separators=(",", ":")))
    return (kind, text)


def from_fields_v1(fields: Obj) -> frozenset[FPath]:
    out: set[FPath] = set()

    def walk(node: Obj, prefix: FPath) -> None:
        for key, child in node.items():
            if key == ".":
                out.add(prefix)
                continue
            sub = prefix + (_parse_pe(key),)
            if not child:
                out.add(sub)
            else:
                walk(child, sub)

    walk(fields or {}, ())
    return frozenset(out)


def decode(entries: list[Obj] | None) -> Managers:
    managers = Managers()
    for e in entries or []:
        ident = manager_id(
            e.get("manager", ""), e.get("operation", "Update"), e.get("apiVersion", ""), e.get("subresource", "")
        )
        managers[ident] = (
            from_fields_v1(e.get("fieldsV1") or {}),
            e.get("operation") == "Apply",
            e.get("apiVersion", ""),
            e.get("time"),
        )
    return managers


def encode(managers: Managers) -> list[Obj]:
    entries = []
    for ident, (paths, applied, version, when) in managers.items():
        info = json.loads(ident)
        entry: Obj = {"manager": info["manager"], "operation": "Apply" if applied else "Update", "apiVersion": version}
        if when:
            entry["time"] = when
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = to_fields_v1(paths)
        if info.get("subresource"):
            entry["subresource"] = info["subresource"]
        entries.append(entry)
    entries.sort(
        key=lambda e: (e["operation"], e.get("time") or "", e["manager"], e["apiVersion"], e.get("subresource", ""))
    )
    return entries


def conflict_message(conflicts: list[tuple[str, FPath]]) -> tuple[str, list[Obj]]:
    """conflict.go 33-89: the 409's message and its causes."""

    def who(ident: str) -> str:
        info = json.loads(ident)
        text = json.dumps(info["manager"])
        if info.get("subresource"):
            text += f' with subresource {json.dumps(info["subresource"])}'
        if info["operation"] == "Update":
            text += f' using {info.get("apiVersion", "")}'
        return text

    causes = [
        {"type": "FieldManagerConflict", "message": f"conflict with {who(m)}", "field": path_string(p)}
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {who(m)}: {path_string(p)}", causes
    lines = []
    for manager in sorted({m for m, _ in conflicts}):
        lines.append(f"conflicts with {who(manager)}:")
        lines += [f"- {path_string(p)}" for m, p in conflicts if m == manager]
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines), causes

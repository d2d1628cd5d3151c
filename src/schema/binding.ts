import { ConfigError } from '../contract/errors.js';
import type { CollectionShape, EntityShape, FieldShape, ScalarType, TreeShape, WatchShape } from '../contract/shape.js';
import type { CollectionDeclaration, Declaration, EntityDeclaration, FixedCondition, IncludeTree } from './declaration.js';
import type { Datamodel, DmmfField, DmmfModel } from './prisma-schema.js';

/*
 * The binding: a declaration (Prisma model and field names) resolved against
 * the bot's Prisma schema. It is the one place where names become tables and
 * columns; every SQL statement (src/store, src/capture) is built from it.
 * This step is pure; catalog.ts then checks it against the database and fills
 * in what only the database knows (vector dimension, column types).
 */

export interface FieldBinding {
  /** Prisma field name. */
  name: string;
  /** Column name (`@map`, else the field name). */
  column: string;
  type: ScalarType;
  list: boolean;
  required: boolean;
  /** Prisma native type ("Uuid", "VarChar", "Citext", "Timestamp", "Date", "Time"…), or null for Prisma's default. */
  native: string | null;
  hasDefault: boolean;
  updatedAt: boolean;
}

export interface RelationBinding {
  /** The relation field on the parent model. */
  field: string;
  parent: string;
  child: string;
  /** To-many. */
  list: boolean;
  /** Join: child.childFields = parent.parentFields, pairwise. */
  parentFields: string[];
  childFields: string[];
  /** Which side holds the foreign key fields (`@relation(fields: …)`). */
  keyOn: 'parent' | 'child';
}

export interface ModelBinding {
  name: string;
  /** PostgreSQL schema (multiSchema), or null for the connection's current schema. */
  schema: string | null;
  table: string;
  fields: Map<string, FieldBinding>;
  /** Scalar and enum fields in schema order: what Prisma returns. */
  scalars: FieldBinding[];
  /** Primary key fields (`@id` or `@@id`). */
  id: string[];
  /** Every unique set (the id first), each with Prisma's where-key name ("id", "slug", "ownerId_name"). */
  uniques: { name: string; fields: string[] }[];
  relations: Map<string, RelationBinding>;
}

export interface IncludeNode {
  model: string;
  /** How this node hangs from its parent; null at the root. */
  relation: RelationBinding | null;
  /** Scalar fields returned, in schema order (omitted ones left out). */
  fields: FieldBinding[];
  children: IncludeNode[];
  /** Key path in the declaration, for messages. */
  path: string;
}

export interface Lookup {
  /** Prisma's where key: "id", "slug", "ownerId_name". */
  name: string;
  fields: string[];
}

export interface EntityBinding {
  name: string;
  model: string;
  root: IncludeNode;
  /** The id first, then the declared lookups. */
  lookups: Lookup[];
  /** Every model in the tree. */
  models: Set<string>;
  /** The declared include, for Prisma (the extension compares calls with it). */
  include: IncludeTree | undefined;
  omit: Record<string, true> | undefined;
}

export type WhereCondition =
  | { op: 'eq'; value: string | number | boolean }
  | { op: 'null' }
  | { op: 'notNull' }
  | { op: 'ne'; value: string | number | boolean }
  | { op: 'in'; values: (string | number | boolean)[] };

export interface CollectionBinding {
  name: string;
  model: string;
  key: FieldBinding;
  embedding: { field: string; column: string; declaredDimension: number | undefined };
  partition: FieldBinding[];
  filters: FieldBinding[];
  where: { field: FieldBinding; condition: WhereCondition }[];
  select: FieldBinding[];
  index: { name: string; method: 'hnsw' | 'ivfflat'; lists: number | undefined; m: number | undefined; efConstruction: number | undefined };
  /** `declared`: named in the declaration; `default`: the default (none above 2,000 dimensions); `none`: `index: false`. */
  indexed: 'declared' | 'default' | 'none';
}

export interface HistoryTtlBinding { model: string; field: FieldBinding; days: number; protect: FieldBinding | undefined }
export interface MemoryCapBinding { collection: string; per: FieldBinding[]; keep: number; orderBy: FieldBinding; protect: FieldBinding | undefined }

export interface WatchedModel {
  model: string;
  /** Fields sent for each new row image, the id first. */
  payload: string[];
  /** Field sets whose values name cached things: the id, join fields, lookups, partitions. */
  keySets: string[][];
  /** Partition field sets of the collections on this model. */
  partitions: string[][];
  /** Columns whose change matters to some cache (UPDATEs touching none of them send nothing). */
  relevantColumns: string[];
}

export interface Binding {
  /** Where the declaration came from, for messages ("memory-sync.config.json", "built-in"). */
  source: string;
  schemaPath: string;
  channel: string;
  captureSource: 'triggers' | 'replication';
  models: Map<string, ModelBinding>;
  entities: Map<string, EntityBinding>;
  collections: Map<string, CollectionBinding>;
  /** Models that send changes, in a stable order. */
  watched: Map<string, WatchedModel>;
  jobs: { historyTtl?: HistoryTtlBinding; memoryCap?: MemoryCapBinding };
}

export const DEFAULT_CHANNEL = 'memory_sync';

/** pgvector's hnsw and ivfflat index vectors of at most this many dimensions. */
export const MAX_INDEXED_DIMENSION = 2_000;

const SCALARS = new Set(['String', 'Int', 'BigInt', 'Float', 'Decimal', 'Boolean', 'DateTime', 'Json', 'Bytes']);
/** Types whose text form names a row exactly: ids, foreign keys, lookups and partitions must have one. */
const KEY_TYPES = new Set<ScalarType>(['String', 'Int', 'BigInt', 'Enum']);

class Binder {
  private readonly models = new Map<string, ModelBinding>();

  constructor(
    private readonly datamodel: Datamodel,
    private readonly source: string,
  ) {}

  fail(path: string, reason: string): never {
    throw new ConfigError(`${this.source}: ${path}`, reason);
  }

  model(name: string, path: string): ModelBinding {
    const cached = this.models.get(name);
    if (cached) return cached;
    const m = this.datamodel.models.find((x) => x.name === name);
    if (!m) {
      const near = this.datamodel.models.map((x) => x.name).filter((n) => n.toLowerCase() === name.toLowerCase());
      this.fail(path, `the schema has no model ${name}${near.length ? ` (did you mean ${near.join(', ')}?)` : ''}`);
    }
    const b = this.bindModel(m);
    this.models.set(name, b);
    return b;
  }

  private bindModel(m: DmmfModel): ModelBinding {
    const fields = new Map<string, FieldBinding>();
    const scalars: FieldBinding[] = [];
    for (const f of m.fields) {
      if (f.kind !== 'scalar' && f.kind !== 'enum') continue;
      const b: FieldBinding = {
        name: f.name,
        column: f.dbName ?? f.name,
        type: f.kind === 'enum' ? 'Enum' : (SCALARS.has(f.type) ? f.type : 'String') as ScalarType,
        list: f.isList,
        required: f.isRequired,
        native: f.nativeType?.[0] ?? null,
        hasDefault: f.hasDefaultValue,
        updatedAt: f.isUpdatedAt ?? false,
      };
      fields.set(f.name, b);
      scalars.push(b);
    }
    const id = m.primaryKey?.fields ?? m.fields.filter((f) => f.isId).map((f) => f.name);
    const uniques: { name: string; fields: string[] }[] = [];
    if (id.length) uniques.push({ name: m.primaryKey?.name ?? id.join('_'), fields: id });
    for (const f of m.fields) if (f.isUnique) uniques.push({ name: f.name, fields: [f.name] });
    const named = (m as DmmfModel & { uniqueIndexes?: { name: string | null; fields: string[] }[] }).uniqueIndexes ?? [];
    for (const u of named) uniques.push({ name: u.name ?? u.fields.join('_'), fields: u.fields });
    for (const u of m.uniqueFields) if (!uniques.some((x) => sameSet(x.fields, u))) uniques.push({ name: u.join('_'), fields: u });
    const relations = new Map<string, RelationBinding>();
    for (const f of m.fields) if (f.kind === 'object') relations.set(f.name, this.relation(m, f));
    return { name: m.name, schema: m.schema ?? null, table: m.dbName ?? m.name, fields, scalars, id, uniques, relations };
  }

  private relation(m: DmmfModel, f: DmmfField): RelationBinding {
    const base = { field: f.name, parent: m.name, child: f.type, list: f.isList };
    if (f.relationFromFields && f.relationFromFields.length) {
      return { ...base, parentFields: f.relationFromFields, childFields: f.relationToFields ?? [], keyOn: 'parent' };
    }
    const other = this.datamodel.models.find((x) => x.name === f.type);
    const back = other?.fields.find(
      (x) => x.kind === 'object' && x.relationName === f.relationName && x.type === m.name && (x.name !== f.name || other.name !== m.name),
    );
    if (!back || !back.relationFromFields?.length) {
      // An implicit many-to-many (Prisma's own _AToB table) has no model to watch.
      return { ...base, parentFields: [], childFields: [], keyOn: 'child' };
    }
    return { ...base, parentFields: back.relationToFields ?? [], childFields: back.relationFromFields, keyOn: 'child' };
  }

  field(model: ModelBinding, name: string, path: string): FieldBinding {
    const f = model.fields.get(name);
    if (f) return f;
    if (model.relations.has(name)) this.fail(path, `${model.name}.${name} is a relation, not a scalar field`);
    this.fail(path, `model ${model.name} has no field ${name}`);
  }

  keyField(model: ModelBinding, name: string, path: string, what: string): FieldBinding {
    const f = this.field(model, name, path);
    if (!KEY_TYPES.has(f.type) || f.list) this.fail(path, `${model.name}.${name} is ${f.type}${f.list ? '[]' : ''}; ${what} must be a String, Int, BigInt or enum field`);
    return f;
  }

  entity(name: string, d: EntityDeclaration): EntityBinding {
    const path = `entities.${name}`;
    const model = this.model(d.model, `${path}.model`);
    if (!model.id.length) this.fail(`${path}.model`, `model ${model.name} has no @id or @@id`);
    for (const [i, f] of model.id.entries()) this.keyField(model, f, `${path}.model`, `the id (${model.id[i]})`);
    const models = new Set<string>();
    const root = this.node(model, null, d.include, d.omit, path, models);
    const lookups: Lookup[] = [{ name: model.uniques[0]!.name, fields: model.id }];
    for (const [i, l] of (d.lookups ?? []).entries()) {
      const fields = typeof l === 'string' ? [l] : l;
      const lp = `${path}.lookups.${i}`;
      for (const f of fields) this.keyField(model, f, lp, 'a lookup field');
      const unique = model.uniques.find((u) => sameSet(u.fields, fields));
      if (!unique) this.fail(lp, `${model.name}.${fields.join(' + ')} is not unique (a lookup needs @unique, @@unique or @id on exactly these fields)`);
      if (!lookups.some((x) => x.name === unique.name)) lookups.push({ name: unique.name, fields: unique.fields });
    }
    return { name, model: model.name, root, lookups, models, include: d.include, omit: d.omit };
  }

  private node(
    model: ModelBinding,
    relation: RelationBinding | null,
    include: IncludeTree | undefined,
    omit: Record<string, true> | undefined,
    path: string,
    models: Set<string>,
  ): IncludeNode {
    models.add(model.name);
    for (const f of Object.keys(omit ?? {})) this.field(model, f, `${path}.omit.${f}`);
    const children: IncludeNode[] = [];
    const needed = new Set(model.id);
    for (const [rel, value] of Object.entries(include ?? {})) {
      const rp = `${path}.include.${rel}`;
      const r = model.relations.get(rel);
      if (!r) {
        if (model.fields.has(rel)) this.fail(rp, `${model.name}.${rel} is a scalar field; include names relations`);
        this.fail(rp, `model ${model.name} has no relation ${rel}`);
      }
      if (!r.parentFields.length) this.fail(rp, `${model.name}.${rel} is an implicit many-to-many relation; declare an explicit link model to cache it`);
      const child = this.model(r.child, rp);
      for (const f of r.childFields) this.keyField(child, f, rp, 'a relation field');
      for (const f of r.parentFields) {
        this.keyField(model, f, rp, 'a relation field');
        needed.add(f);
      }
      const sub = value === true ? {} : value;
      children.push(this.node(child, r, sub.include, sub.omit, rp, models));
    }
    for (const f of needed) {
      if (omit?.[f]) this.fail(`${path}.omit.${f}`, `${model.name}.${f} cannot be omitted: memory-sync follows changes by it`);
    }
    const fields = model.scalars.filter((f) => !omit?.[f.name]);
    return { model: model.name, relation, fields, children, path };
  }

  collection(name: string, d: CollectionDeclaration): CollectionBinding {
    const path = `collections.${name}`;
    const model = this.model(d.model, `${path}.model`);
    if (model.id.length !== 1) this.fail(`${path}.model`, `model ${model.name} needs a single-field @id to be a collection`);
    const key = this.keyField(model, model.id[0]!, `${path}.model`, 'a collection id');
    const dm = this.datamodel.models.find((m) => m.name === model.name)!;
    const asField = dm.fields.find((f) => f.name === d.embedding);
    if (asField && asField.kind !== 'unsupported') {
      this.fail(`${path}.embedding`, `${model.name}.${d.embedding} is ${asField.kind === 'object' ? 'a relation' : `a ${asField.type} field`}, not a vector (declare it Unsupported("vector"))`);
    }
    const partition = d.partitionBy.map((f, i) => this.keyField(model, f, `${path}.partitionBy.${i}`, 'a partition field'));
    const filters = (d.filters ?? []).map((f, i) => {
      const fp = `${path}.filters.${i}`;
      const b = this.field(model, f, fp);
      if (b.type === 'Json') this.fail(fp, `${model.name}.${f} is a JSON column; filters take String, enum, Int, Float, Boolean or DateTime fields`);
      if (b.list || b.type === 'Bytes' || b.type === 'Decimal' || b.type === 'BigInt') {
        this.fail(fp, `${model.name}.${f} is ${b.type}${b.list ? '[]' : ''}; filters take String, enum, Int, Float, Boolean or DateTime fields`);
      }
      return b;
    });
    const where = Object.entries(d.where ?? {}).map(([f, c]) => {
      const b = this.field(model, f, `${path}.where.${f}`);
      return { field: b, condition: this.condition(b, c, `${path}.where.${f}`) };
    });
    const select = (d.select ?? []).map((f, i) => this.field(model, f, `${path}.select.${i}`));
    const column = d.embeddingColumn ?? d.embedding;
    const spec = d.index === false ? undefined : d.index;
    const method = spec?.method ?? 'hnsw';
    if (spec?.lists !== undefined && method !== 'ivfflat') this.fail(`${path}.index.lists`, 'applies to ivfflat only');
    if ((spec?.m !== undefined || spec?.efConstruction !== undefined) && method !== 'hnsw') this.fail(`${path}.index`, 'm and efConstruction apply to hnsw only');
    const index = {
      name: spec?.name ?? `${model.table}_${column}_cosine`.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 63),
      method,
      lists: spec?.lists,
      m: spec?.m,
      efConstruction: spec?.efConstruction,
    };
    const indexed = d.index === false ? ('none' as const) : d.index ? ('declared' as const) : ('default' as const);
    if (indexed === 'declared' && d.dimension !== undefined && d.dimension > MAX_INDEXED_DIMENSION) {
      this.fail(`${path}.index`, `pgvector indexes vectors of at most ${MAX_INDEXED_DIMENSION} dimensions; this one has ${d.dimension}: leave index out (or false), and a miss scans the partition exactly`);
    }
    return {
      name,
      model: model.name,
      key,
      embedding: { field: d.embedding, column: d.embeddingColumn ?? d.embedding, declaredDimension: d.dimension },
      partition,
      filters,
      where,
      select,
      index,
      indexed,
    };
  }

  private condition(f: FieldBinding, c: FixedCondition, path: string): WhereCondition {
    const check = (v: string | number | boolean) => {
      const want = f.type === 'Boolean' ? 'boolean' : f.type === 'Int' || f.type === 'Float' ? 'number' : f.type === 'String' || f.type === 'Enum' ? 'string' : null;
      if (want === null || f.list) this.fail(path, `${f.name} is ${f.type}${f.list ? '[]' : ''}; a fixed condition takes String, enum, Int, Float or Boolean fields (or null)`);
      if (typeof v !== want) this.fail(path, `must be a ${want} (${f.name} is ${f.type})`);
      return v;
    };
    if (c === null) {
      if (f.required) this.fail(path, `${f.name} is required, so it is never NULL`);
      return { op: 'null' };
    }
    if (typeof c !== 'object') return { op: 'eq', value: check(c) };
    if ('not' in c) {
      if (c.not === null) return { op: 'notNull' };
      return { op: 'ne', value: check(c.not) };
    }
    return { op: 'in', values: c.in.map(check) };
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function addSet(sets: string[][], set: string[]): void {
  if (set.length && !sets.some((s) => s.length === set.length && s.every((x, i) => x === set[i]))) sets.push(set);
}

/** Resolves a validated declaration against the schema's datamodel. Every mistake is a ConfigError naming the key path. */
export function bind(declaration: Declaration, datamodel: Datamodel, options: { source: string; schemaPath: string }): Binding {
  const binder: Binder = new Binder(datamodel, options.source);
  const entities = new Map<string, EntityBinding>();
  for (const [name, d] of Object.entries(declaration.entities ?? {})) entities.set(name, binder.entity(name, d));
  const collections = new Map<string, CollectionBinding>();
  for (const [name, d] of Object.entries(declaration.collections ?? {})) {
    if (entities.has(name)) binder.fail(`collections.${name}`, `is also the name of an entity`);
    collections.set(name, binder.collection(name, d));
  }
  const jobs: Binding['jobs'] = {};
  const h = declaration.jobs?.historyTtl;
  if (h) {
    const model = binder.model(h.model, 'jobs.historyTtl.model');
    const field = binder.field(model, h.field, 'jobs.historyTtl.field');
    if (field.type !== 'DateTime') binder.fail('jobs.historyTtl.field', `${model.name}.${field.name} is ${field.type}, not DateTime`);
    const protect = h.protect === undefined ? undefined : binder.field(model, h.protect, 'jobs.historyTtl.protect');
    if (protect && protect.type !== 'Boolean') binder.fail('jobs.historyTtl.protect', `${model.name}.${protect.name} is ${protect.type}, not Boolean`);
    jobs.historyTtl = { model: model.name, field, days: h.days, protect };
  }
  const c = declaration.jobs?.memoryCap;
  if (c) {
    const coll = collections.get(c.collection);
    if (!coll) binder.fail('jobs.memoryCap.collection', `no collection ${c.collection} is declared`);
    const model = binder.model(coll.model, 'jobs.memoryCap.collection');
    const per = c.per.map((f, i) => binder.field(model, f, `jobs.memoryCap.per.${i}`));
    const orderBy = binder.field(model, c.orderBy, 'jobs.memoryCap.orderBy');
    if (orderBy.type !== 'DateTime') binder.fail('jobs.memoryCap.orderBy', `${model.name}.${orderBy.name} is ${orderBy.type}, not DateTime`);
    const protect = c.protect === undefined ? undefined : binder.field(model, c.protect, 'jobs.memoryCap.protect');
    if (protect && protect.type !== 'Boolean') binder.fail('jobs.memoryCap.protect', `${model.name}.${protect.name} is ${protect.type}, not Boolean`);
    jobs.memoryCap = { collection: coll.name, per, keep: c.keep, orderBy, protect };
  }

  const models = new Map<string, ModelBinding>();
  for (const e of entities.values()) for (const m of e.models) models.set(m, binder.model(m, `entities.${e.name}`));
  for (const col of collections.values()) models.set(col.model, binder.model(col.model, `collections.${col.name}`));
  if (jobs.historyTtl) models.set(jobs.historyTtl.model, binder.model(jobs.historyTtl.model, 'jobs.historyTtl.model'));

  return {
    source: options.source,
    schemaPath: options.schemaPath,
    channel: declaration.channel ?? DEFAULT_CHANNEL,
    captureSource: declaration.source ?? 'triggers',
    models,
    entities,
    collections,
    watched: watchedModels(models, entities, collections),
    jobs,
  };
}

function watchedModels(models: Map<string, ModelBinding>, entities: Map<string, EntityBinding>, collections: Map<string, CollectionBinding>): Map<string, WatchedModel> {
  const w = new Map<string, WatchedModel>();
  const get = (name: string): WatchedModel => {
    let m = w.get(name);
    if (!m) {
      const model = models.get(name)!;
      w.set(name, (m = { model: name, payload: [...model.id], keySets: [[...model.id]], partitions: [], relevantColumns: [] }));
      for (const f of model.id) addColumn(m, model, f);
    }
    return m;
  };
  const addColumn = (m: WatchedModel, model: ModelBinding, field: string) => {
    const col = model.fields.get(field)?.column ?? field;
    if (!m.relevantColumns.includes(col)) m.relevantColumns.push(col);
  };
  const addPayload = (m: WatchedModel, model: ModelBinding, fields: string[]) => {
    for (const f of fields) {
      if (!m.payload.includes(f)) m.payload.push(f);
      addColumn(m, model, f);
    }
  };
  const walk = (node: IncludeNode) => {
    const m = get(node.model);
    const model = models.get(node.model)!;
    for (const f of node.fields) addColumn(m, model, f.name);
    if (node.relation) {
      addSet(m.keySets, node.relation.childFields);
      addPayload(m, model, node.relation.childFields);
    }
    for (const c of node.children) walk(c);
  };
  for (const e of [...entities.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    walk(e.root);
    const m = get(e.model);
    const model = models.get(e.model)!;
    for (const l of e.lookups) {
      addSet(m.keySets, l.fields);
      addPayload(m, model, l.fields);
    }
  }
  for (const c of [...collections.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const m = get(c.model);
    const model = models.get(c.model)!;
    const part = c.partition.map((f) => f.name);
    addSet(m.partitions, part);
    addPayload(m, model, part);
    for (const f of [...c.filters, ...c.select, ...c.where.map((x) => x.field)]) addColumn(m, model, f.name);
    if (!m.relevantColumns.includes(c.embedding.column)) m.relevantColumns.push(c.embedding.column);
  }
  return new Map([...w].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// ------------------------------------------------------------------ shapes

/** A collection's shape, for the cache and the remote client. */
export function collectionShape(c: CollectionBinding, dimension: number, facts: ColumnFacts = () => ({})): CollectionShape {
  const f = (x: FieldBinding) => fieldShape(x, facts(c.model, x.name));
  return { name: c.name, model: c.model, dimension, partitionBy: c.partition.map(f), filters: c.filters.map(f), select: c.select.map(f) };
}

/** What the catalog knows of a column that the caches need (catalog.ts). */
export type ColumnFacts = (model: string, field: string) => { canon?: 'lower' | 'trimEnd'; uuid?: boolean };

export function fieldShape(f: FieldBinding, facts: { canon?: 'lower' | 'trimEnd'; uuid?: boolean } = {}): FieldShape {
  return { name: f.name, type: f.type, list: f.list, ...(facts.canon ? { canon: facts.canon } : {}), ...(facts.uuid || f.native === 'Uuid' ? { uuid: true } : {}) };
}

/**
 * How a value's keys are named: plain data, shared with the remote client
 * (GET /v1/schema) so its local cache follows the same changes. `canon`
 * comes from the catalog: citext compares lower-cased, char(n) without
 * trailing blanks.
 */
export function entityShape(b: Binding, e: EntityBinding, facts: ColumnFacts = () => ({})): EntityShape {
  const tree = (node: IncludeNode): TreeShape => {
    const model = b.models.get(node.model)!;
    return {
      model: node.model,
      id: model.id,
      fields: node.fields.map((f) => fieldShape(f, facts(node.model, f.name))),
      children: node.children.map((c) => ({
        field: c.relation!.field,
        list: c.relation!.list,
        parentFields: c.relation!.parentFields,
        childFields: c.relation!.childFields,
        node: tree(c),
      })),
    };
  };
  return {
    name: e.name,
    root: tree(e.root),
    lookups: e.lookups.map((l) => ({ name: l.name, fields: l.fields })),
    ...(e.include ? { include: e.include } : {}),
    ...(e.omit ? { omit: e.omit } : {}),
  };
}

export function watchShape(b: Binding, facts: ColumnFacts = () => ({})): WatchShape[] {
  return [...b.watched.values()].map((w) => {
    const c: Record<string, 'lower' | 'trimEnd'> = {};
    for (const f of w.payload) {
      const k = facts(w.model, f).canon;
      if (k) c[f] = k;
    }
    return { model: w.model, id: b.models.get(w.model)!.id, keySets: w.keySets, partitions: w.partitions, canon: c };
  });
}

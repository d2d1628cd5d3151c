/*
 * What a cache needs to know of the declared schema, as plain data: the
 * sidecar serves it (GET /v1/schema) so the remote client's local cache
 * names keys, follows changes and revives values exactly as the sidecar does.
 * Prisma names only; tables and columns stay in the binding.
 */

/** A Prisma scalar type; enums are "Enum". */
export type ScalarType = 'String' | 'Int' | 'BigInt' | 'Float' | 'Decimal' | 'Boolean' | 'DateTime' | 'Json' | 'Bytes' | 'Enum';

export interface FieldShape {
  name: string;
  type: ScalarType;
  list: boolean;
  /** How a key value is compared: citext lower-cased, char(n) without trailing blanks. */
  canon?: 'lower' | 'trimEnd';
  /** A uuid column: inputs must be UUIDs (lower-cased). */
  uuid?: boolean;
}

/** One model of an entity's include tree. */
export interface TreeShape {
  model: string;
  /** Primary key fields. */
  id: string[];
  /** Scalar fields returned, in order. */
  fields: FieldShape[];
  children: {
    /** The relation field, the key of the nested value. */
    field: string;
    list: boolean;
    /** child[childFields] = parent[parentFields]. */
    parentFields: string[];
    childFields: string[];
    node: TreeShape;
  }[];
}

export interface EntityShape {
  name: string;
  root: TreeShape;
  /** The declared include and omit, as Prisma takes them (the extension compares calls with them and loads with them). */
  include?: object;
  omit?: object;
  /** The id first. `name` is Prisma's where key ("id", "slug", "ownerId_name"). */
  lookups: { name: string; fields: string[] }[];
}

/** A model whose changes are captured: which field sets of an event name cached things. */
export interface WatchShape {
  model: string;
  id: string[];
  /** The id, join fields and lookups. */
  keySets: string[][];
  /** Partition field sets of collections on the model. */
  partitions: string[][];
  /** Key canonicalization per field (see FieldShape.canon). */
  canon: Record<string, 'lower' | 'trimEnd'>;
}

export interface CollectionShape {
  name: string;
  model: string;
  dimension: number;
  partitionBy: FieldShape[];
  filters: FieldShape[];
  select: FieldShape[];
}

/** GET /v1/schema. */
export interface SchemaShape {
  channel: string;
  entities: EntityShape[];
  collections: CollectionShape[];
  watched: WatchShape[];
}

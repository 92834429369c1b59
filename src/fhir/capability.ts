// The CapabilityStatement served at `GET /fhir/metadata`. Search parameters come from the very table the query parser
// and the index extraction use (search-params.ts), and the interactions are what the routes pass in, so the
// statement says what the code does.

import type {
  CapabilityStatement,
  CapabilityStatementRestResource,
  CapabilityStatementRestResourceOperation,
  CapabilityStatementRestResourceSearchParam,
} from "@medplum/fhirtypes";
import { SEARCH_PARAMS } from "./search-params.ts";

export type TypeInteraction =
  | "read"
  | "vread"
  | "update"
  | "patch"
  | "delete"
  | "history-instance"
  | "history-type"
  | "create"
  | "search-type";

export type SystemInteraction = "transaction" | "batch" | "search-system" | "history-system";

export interface OperationSpec {
  /** Without the `$` (`everything`). */
  name: string;
  /** Canonical URL of its OperationDefinition. */
  definition: string;
  documentation?: string;
}

export interface CapabilityOptions {
  /** This server's FHIR base URL (`https://host/fhir`). */
  baseUrl: string;
  /** Per resource type, the interactions its routes serve. Search parameters are added for searchable types. */
  resources: Readonly<Record<string, readonly TypeInteraction[]>>;
  /** Operations per resource type (`Patient`: $everything, $export, $erase, $break-glass). */
  operations?: Readonly<Record<string, readonly OperationSpec[]>>;
  systemInteractions?: readonly SystemInteraction[];
  /** SMART on FHIR endpoints (the OAuth token endpoint, and the authorize endpoint if any). */
  smart?: { tokenUrl: string; authorizeUrl?: string; description?: string };
  software?: { name: string; version: string };
  /** When the statement was published (dateTime); default now. */
  date?: string;
}

const KIND_TO_TYPE = { token: "token", string: "string", reference: "reference", date: "date" } as const;

/** Parameters every searchable type has (handled in search-query.ts, not in the type's table). */
const COMMON_PARAMS: CapabilityStatementRestResourceSearchParam[] = [
  {
    name: "_id",
    type: "token",
    definition: "http://hl7.org/fhir/SearchParameter/Resource-id",
    documentation: "Logical id (comma = any of)",
  },
  {
    name: "_lastUpdated",
    type: "date",
    definition: "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    documentation: "When the resource version last changed (eq ne lt gt le ge sa eb ap)",
  },
];

function searchParamsOf(type: string): CapabilityStatementRestResourceSearchParam[] | undefined {
  const defs = SEARCH_PARAMS[type];
  if (defs === undefined) return undefined;
  return defs.map((d) => ({
    name: d.code,
    type: KIND_TO_TYPE[d.kind],
    documentation: `${d.description}. Expression: ${d.expression}${
      d.kind === "string"
        ? ". Matches the start of a value, case and accents ignored; :exact matches the whole value"
        : d.kind === "token"
          ? ". system|code, |code, system|, code; :not"
          : ""
    }`,
  }));
}

/** Builds the statement; `resources` decides which types appear. */
export function capabilityStatement(options: CapabilityOptions): CapabilityStatement {
  const resource: CapabilityStatementRestResource[] = Object.entries(options.resources).map(([type, interactions]) => {
    const searchable = interactions.includes("search-type");
    const params = searchable ? searchParamsOf(type) : undefined;
    const operations: CapabilityStatementRestResourceOperation[] | undefined = options.operations?.[type]?.map((o) => ({
      name: o.name,
      definition: o.definition,
      ...(o.documentation === undefined ? {} : { documentation: o.documentation }),
    }));
    return {
      // The medplum types list Medplum's own resource types too; ours are R4 names.
      type: type as CapabilityStatementRestResource["type"],
      interaction: interactions.map((code) => ({ code })),
      versioning: "versioned",
      readHistory: interactions.includes("vread"),
      updateCreate: interactions.includes("update"),
      conditionalCreate: false,
      conditionalRead: "not-supported",
      conditionalUpdate: false,
      conditionalDelete: "not-supported",
      ...(params === undefined ? {} : { searchParam: [...params, ...COMMON_PARAMS] }),
      ...(operations === undefined || operations.length === 0 ? {} : { operation: operations }),
    };
  });

  const security = options.smart;
  return {
    resourceType: "CapabilityStatement",
    status: "active",
    date: options.date ?? new Date().toISOString(),
    kind: "instance",
    ...(options.software === undefined ? {} : { software: { ...options.software } }),
    implementation: { description: "CareLedger FHIR API (consent enforced on every read)", url: options.baseUrl },
    fhirVersion: "4.0.1",
    format: ["application/fhir+json", "json"],
    rest: [
      {
        mode: "server",
        ...(security === undefined
          ? {}
          : {
              security: {
                extension: [
                  {
                    url: "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    extension: [
                      { url: "token", valueUri: security.tokenUrl },
                      ...(security.authorizeUrl === undefined
                        ? []
                        : [{ url: "authorize", valueUri: security.authorizeUrl }]),
                    ],
                  },
                ],
                service: [
                  {
                    coding: [
                      {
                        system: "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        code: "SMART-on-FHIR",
                      },
                    ],
                  },
                ],
                description:
                  security.description ??
                  "SMART Backend Services: private_key_jwt client assertion (EdDSA) for a bearer token with SMART v2 scopes",
              },
            }),
        resource,
        ...(options.systemInteractions === undefined || options.systemInteractions.length === 0
          ? {}
          : { interaction: options.systemInteractions.map((code) => ({ code })) }),
      },
    ],
  };
}

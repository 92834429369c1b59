// SMART Backend Services auth for the FHIR API: token endpoint, bearer verification, scopes, discovery.
export * from "./bearer.ts";
export * from "./client-assertion.ts";
export * from "./identity.ts";
export * from "./jti-cache.ts";
export * from "./scopes.ts";
export * from "./smart-configuration.ts";
export * from "./token-endpoint.ts";
export * from "./webcrypto-assertion.ts";

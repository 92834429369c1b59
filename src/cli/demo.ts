import { ConfigError } from "../node/datadir.ts";

export async function demoCommand(): Promise<void> {
  throw new ConfigError("demo: not built yet");
}

import type { Request, Response } from 'express';
import type { Config } from '../../config/schema.js';
import { rootUrls } from '../../staging/allowed-roots.js';
import type { TesServiceInfo } from '../../tes/types.js';

export interface ServiceInfoFacts {
  /** URL schemes the gateway can read inputs from and write outputs to. */
  storage: readonly string[];
  backendParameters: readonly string[];
  version: string;
  startedAt: string;
}

/**
 * The spec's `storage` "lists some, but not necessarily all, storage locations supported by the
 * service": the URL schemes, then each allowed root as a `file://` prefix (`file:///shared/projects/`).
 * Clients decide from the prefixes what the gateway can reach: Toil mounts its file job store into
 * its tasks only when one of them is a prefix of `file://<job store>`.
 */
export function buildServiceInfo(config: Config, facts: ServiceInfoFacts): TesServiceInfo {
  const s = config.server.serviceInfo;
  const info: TesServiceInfo = {
    id: s.id,
    name: s.name,
    type: { group: 'org.ga4gh', artifact: 'tes', version: '1.1.0' },
    description: s.description,
    organization: s.organization,
    createdAt: facts.startedAt,
    updatedAt: facts.startedAt,
    version: facts.version,
    storage: [...new Set([...facts.storage, ...rootUrls(config.storage.allowedRoots)])],
    tesResources_backend_parameters: [...facts.backendParameters],
  };
  if (s.contactUrl) info.contactUrl = s.contactUrl;
  if (s.documentationUrl) info.documentationUrl = s.documentationUrl;
  if (s.environment) info.environment = s.environment;
  return info;
}

export function serviceInfoHandler(info: TesServiceInfo) {
  return (_req: Request, res: Response): void => {
    res.setHeader('Cache-Control', 'no-store');
    res.json(info);
  };
}

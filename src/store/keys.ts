import type { TesState } from '../tes/state.js';

/**
 * Every Redis key the gateway uses, under one configurable prefix, so several gateways (and parallel
 * test runs) can share one Redis. Index sets hold task ids with score 0: ids sort by creation time, so
 * a reverse lexical walk lists newest first.
 */
export class Keys {
  constructor(readonly prefix: string) {}

  task(taskId: string): string {
    return `${this.prefix}task:${taskId}`;
  }
  get taskPrefix(): string {
    return `${this.prefix}task:`;
  }
  get all(): string {
    return `${this.prefix}idx:all`;
  }
  get names(): string {
    return `${this.prefix}idx:name`;
  }
  state(state: TesState): string {
    return `${this.prefix}idx:state:${state}`;
  }
  get statePrefix(): string {
    return `${this.prefix}idx:state:`;
  }
  /** Tasks carrying a tag key, whatever its value. JSON keeps `a:b`=`c` apart from `a`=`b:c`. */
  tagKey(key: string): string {
    return `${this.prefix}idx:tag:${JSON.stringify([key])}`;
  }
  tagValue(key: string, value: string): string {
    return `${this.prefix}idx:tag:${JSON.stringify([key, value])}`;
  }
  /** The tasks of one owner: get, list and cancel of a non-admin walk only these. */
  owner(user: string): string {
    return `${this.prefix}idx:owner:${user}`;
  }
  /** taskId -> cluster job id, for every task that has a job and is not yet terminal. */
  get jobs(): string {
    return `${this.prefix}jobs`;
  }
  lock(name: string): string {
    return `${this.prefix}lock:${name}`;
  }
  /** Pull lock of one cached image, keyed by its cache file name (which already hashes the reference). */
  imagePull(cacheName: string): string {
    return `${this.prefix}image:pull:${cacheName}`;
  }
  /** A permanent pull failure, remembered briefly so that callers fail fast instead of pulling again. */
  imageFailure(cacheName: string): string {
    return `${this.prefix}image:failed:${cacheName}`;
  }
  /** Sorted set: cache file path -> last use (epoch ms), for LRU eviction. */
  get imageLastUse(): string {
    return `${this.prefix}image:last-use`;
  }
  /** Personal access tokens: id -> JSON record (identity/tokens.ts; `<this>:used` holds last uses). */
  get tokens(): string {
    return `${this.prefix}tokens`;
  }
  get bullPrefix(): string {
    return `${this.prefix}bull`;
  }
}

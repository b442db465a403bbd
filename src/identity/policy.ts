import { posix } from 'node:path';
import type { Config } from '../config/schema.js';
import type { FieldProblem } from '../errors.js';
import type { TaskRequest } from '../tes/types.js';
import { hasDotDotSegment } from '../tes/dot-dot.js';

/** One host folder a user may name in `file://` URLs, as storage.allowedRoots holds them. */
export interface PolicyRoot {
  path: string;
  writable: boolean;
}

/** What one user may use: the entries of identity.policy that apply to them, joined. */
export interface UserPolicy {
  /** storage.allowedRoots and every root the policy gives them, templates filled in. */
  roots: PolicyRoot[];
  /** Undefined: any (Slurm still decides). */
  accounts?: ReadonlySet<string> | undefined;
  partitions?: ReadonlySet<string> | undefined;
  qos?: ReadonlySet<string> | undefined;
  defaultAccount?: string | undefined;
}

type PolicyConfig = Config['identity']['policy'];
type Entry = PolicyConfig['everyone'];

/** The Slurm choices a policy limits, by backend_parameters key. */
const LIMITED = [
  { key: 'account', list: 'accounts' },
  { key: 'partition', list: 'partitions' },
  { key: 'qos', list: 'qos' },
] as const;

/**
 * identity.policy: what each user may use, from the entries for everyone, for each group they belong
 * to, and for them by name. Lists join: a user may use what any entry that applies to them allows. A
 * list no applicable entry sets leaves that choice to Slurm. The default account is the user's own,
 * else their first group's (in the configuration's order), else everyone's.
 */
export class Policy {
  private readonly cache = new Map<string, UserPolicy>();

  constructor(
    private readonly config: PolicyConfig,
    private readonly siteRoots: readonly PolicyRoot[],
    private readonly admins: Config['identity']['admins'],
  ) {}

  /** The user's groups: those their credentials carry, and the policy groups that list them. */
  groupsOf(user: string, carried: readonly string[]): string[] {
    const groups = new Set(carried);
    for (const [name, group] of Object.entries(this.config.groups)) {
      if (group.members.includes(user)) groups.add(name);
    }
    return [...groups].sort();
  }

  isAdmin(user: string, groups: readonly string[]): boolean {
    return this.admins.users.includes(user) || groups.some((g) => this.admins.groups.includes(g));
  }

  /** What `user`, member of `groups` (as groupsOf says), may use. */
  forUser(user: string, groups: readonly string[]): UserPolicy {
    const cacheKey = `${user}\0${groups.join('\0')}`;
    const cached = this.cache.get(cacheKey);
    if (cached) return cached;
    const applying: Array<{ entry: Entry; group?: string }> = [{ entry: this.config.everyone }];
    for (const [name, group] of Object.entries(this.config.groups)) {
      if (groups.includes(name)) applying.push({ entry: group, group: name });
    }
    const own = this.config.users[user];
    if (own) applying.push({ entry: own });

    const roots: PolicyRoot[] = [...this.siteRoots];
    for (const { entry, group } of applying) {
      for (const root of entry.roots) {
        roots.push({ path: fillTemplate(root.path, user, group), writable: root.writable });
      }
    }
    const policy: UserPolicy = { roots };
    for (const { list } of LIMITED) {
      const lists = applying.map(({ entry }) => entry[list]).filter((l) => l !== undefined);
      if (lists.length > 0) policy[list] = new Set(lists.flat());
    }
    policy.defaultAccount =
      own?.defaultAccount ??
      applying.find(({ group, entry }) => group !== undefined && entry.defaultAccount)?.entry
        .defaultAccount ??
      this.config.everyone.defaultAccount;
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(cacheKey, policy);
    return policy;
  }

  /**
   * What in a task the user may not ask for: Slurm choices outside their lists, and `file://` inputs
   * and outputs outside their roots (judged on the path as written; the worker judges the real path
   * again before it binds or writes anything).
   */
  checkTask(task: TaskRequest, user: string, groups: readonly string[]): FieldProblem[] {
    const policy = this.forUser(user, groups);
    const problems: FieldProblem[] = [];
    const bp = task.resources?.backend_parameters ?? {};
    for (const { key, list } of LIMITED) {
      const value = bp[key];
      const allowed = policy[list];
      if (value === undefined || allowed === undefined || allowed.has(value)) continue;
      problems.push({
        path: `resources.backend_parameters.${key}`,
        message:
          `${user} may not use the ${key} ${JSON.stringify(value)}; allowed: ` +
          `${[...allowed].join(', ') || '(none)'} (identity.policy)`,
      });
    }
    problems.push(
      ...placeProblems(
        task,
        policy.roots,
        (url) =>
          `${url} is outside the places ${user} may use: ` +
          `${policy.roots.map((r) => r.path).join(', ') || '(none)'} (storage.allowedRoots, identity.policy)`,
      ),
    );
    return problems;
  }

  /**
   * The `file://` inputs and outputs of a task that carries no identity (auth.mode none) outside the
   * site's roots, judged on the path as written, as checkTask does for a user.
   */
  checkPlaces(task: TaskRequest): FieldProblem[] {
    return placeProblems(
      task,
      this.siteRoots,
      (url) =>
        `${url} is outside the allowed roots: ` +
        `${this.siteRoots.map((r) => r.path).join(', ') || '(none)'} (storage.allowedRoots)`,
    );
  }
}

/** Inputs and outputs naming a host path (file:// or a bare absolute path) outside `roots`. */
function placeProblems(
  task: TaskRequest,
  roots: readonly PolicyRoot[],
  message: (url: string) => string,
): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const check = (url: string | undefined, path: string): void => {
    if (url === undefined) return;
    const host = hostPathOf(url);
    if (host === undefined) return;
    if (!roots.some((root) => within(host, root.path))) problems.push({ path, message: message(url) });
  };
  task.inputs?.forEach((input, i) => check(input.url, `inputs[${i}].url`));
  task.outputs?.forEach((output, i) => check(output.url, `outputs[${i}].url`));
  return problems;
}

/** The policy a configuration describes. */
export function policyFor(config: Config): Policy {
  return new Policy(config.identity.policy, config.storage.allowedRoots, config.identity.admins);
}

/** `{user}` and `{group}` filled in; both are checked names, so they never hold `/` or `..`. */
function fillTemplate(path: string, user: string, group: string | undefined): string {
  return posix.normalize(path.replaceAll('{user}', user).replaceAll('{group}', group ?? '{group}'));
}

/**
 * The host path a `file://` URL or bare absolute path names, normalized; undefined for other schemes
 * (http, s3), which no root governs. A path with `..` is kept as written so it matches no root.
 */
function hostPathOf(url: string): string | undefined {
  let path: string;
  if (url.startsWith('file://')) {
    try {
      path = decodeURIComponent(new URL(url).pathname);
    } catch {
      return '';
    }
    if (hasDotDotSegment(url)) return '';
  } else if (url.startsWith('/')) {
    path = url;
  } else {
    return undefined;
  }
  if (hasDotDotSegment(path)) return '';
  return posix.normalize(path);
}

function within(path: string, root: string): boolean {
  if (path === '') return false;
  const r = root.endsWith('/') ? root : `${root}/`;
  return path === root || path.startsWith(r);
}

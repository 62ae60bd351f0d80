import type { Repository } from '../db/repository.js';
import type { UserJson } from '../routes/schemas.js';

// Users' quotas and usage, as the /v1 API and the demo show them.

export function createUserService(deps: { repo: Pick<Repository, 'getUser' | 'setQuota'>; defaultQuotaBytes: number }) {
  const { repo } = deps;

  /** A user Chipmunk has not seen yet has the default quota and nothing stored. */
  function describe(id: string): UserJson {
    const user = repo.getUser(id);
    return {
      id,
      quotaBytes: user?.quotaBytes ?? deps.defaultQuotaBytes,
      usedBytes: user?.usedBytes ?? 0,
      reservedBytes: user?.reservedBytes ?? 0,
      fileCount: user?.fileCount ?? 0,
    };
  }

  return {
    describe,

    setQuota(id: string, quotaBytes: number): UserJson {
      repo.setQuota(id, quotaBytes);
      return describe(id);
    },
  };
}

export type UserService = ReturnType<typeof createUserService>;

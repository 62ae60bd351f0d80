import type { Repository } from '../db/repository.js';
import type { UserJson } from '../routes/schemas.js';

// Users' quotas and usage, as the /v1 API and the demo show them.

export function createUserService(deps: { repo: Pick<Repository, 'getUser' | 'setQuota'>; defaultQuotaBytes: number }) {
  const { repo } = deps;

  /** A user Chipmunk has not seen yet has the default quota and nothing stored. */
  async function describe(id: string): Promise<UserJson> {
    const user = await repo.getUser(id);
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

    async setQuota(id: string, quotaBytes: number): Promise<UserJson> {
      await repo.setQuota(id, quotaBytes);
      return describe(id);
    },
  };
}

export type UserService = ReturnType<typeof createUserService>;

// Who is signed in, and what their role lets them do.
//
// `GET /api/auth/me` is cached under ['me'] (`null` when signed out). Any API call that
// answers 401 clears it, which makes <RequireAuth> send the user to Sign in with a
// `next` link back. Roles are ordered viewer < operator < admin; operator actions are
// wrapped in <RequireRole min="operator"> so viewers never see them.
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, type ReactNode } from 'react';
import { Navigate, Outlet, useLocation } from 'react-router';
import { setUnauthorizedHandler } from '../api/client';
import { me } from '../api/endpoints';
import type { Role, User } from '../api/types';
import { ErrorState, Loading } from '../ui';

export const ME_KEY = ['me'] as const;

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

/** Whether `role` includes `min` (unknown roles get nothing beyond viewing). */
export function hasRole(role: Role | string | null | undefined, min: Role): boolean {
  if (!role) return false;
  const r = RANK[role as Role];
  return r !== undefined && r >= RANK[min];
}

export function useMe() {
  return useQuery({ queryKey: ME_KEY, queryFn: () => me(), staleTime: 5 * 60_000, retry: 1 });
}

export function useUser(): User | null {
  return useMe().data ?? null;
}

export function useCan(min: Role): boolean {
  return hasRole(useUser()?.role, min);
}

/** Renders `children` only for users whose role includes `min`. */
export function RequireRole({ min, children, fallback = null }: { min: Role; children: ReactNode; fallback?: ReactNode }) {
  return <>{useCan(min) ? children : fallback}</>;
}

/** A layout route: its children need a signed-in user. */
export function RequireAuth() {
  const { data: user, isPending, error, refetch } = useMe();
  const location = useLocation();
  if (isPending) return <Loading label="Checking your session…" />;
  if (error) return <ErrorState error={error} onRetry={() => void refetch()} />;
  if (!user) {
    const next = `${location.pathname}${location.search}`;
    const to = next && next !== '/' ? `/signin?next=${encodeURIComponent(next)}` : '/signin';
    return <Navigate to={to} replace />;
  }
  return <Outlet />;
}

/** Any 401 from the API means the session is gone: forget the user (→ Sign in). */
export function UnauthorizedListener() {
  const queryClient = useQueryClient();
  useEffect(
    () =>
      setUnauthorizedHandler(() => {
        queryClient.setQueryData(ME_KEY, null);
      }),
    [queryClient],
  );
  return null;
}

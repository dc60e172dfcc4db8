import { useMutation, useQueryClient } from '@tanstack/react-query';
import { NavLink, Outlet, useLocation, useNavigate } from 'react-router';
import { logout } from '../api/endpoints';
import { ME_KEY, useUser } from '../auth/auth';
import { Badge, Button, ErrorBoundary } from '../ui';

const NAV: { to: string; label: string; end?: boolean }[] = [
  { to: '/', label: 'Overview', end: true },
  { to: '/projects', label: 'Projects' },
  { to: '/runs', label: 'Runs' },
  { to: '/dead-letters', label: 'Dead letters' },
  { to: '/schedules', label: 'Schedules' },
  { to: '/workflows', label: 'Workflows' },
  { to: '/workers', label: 'Workers' },
  { to: '/tokens', label: 'Tokens' },
];

export function AppShell() {
  const user = useUser();
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const location = useLocation();
  const signOut = useMutation({
    mutationFn: logout,
    onSettled: () => {
      queryClient.clear();
      queryClient.setQueryData(ME_KEY, null);
      navigate('/signin', { replace: true });
    },
  });
  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <aside className="sidebar">
        <NavLink to="/" className="brand" aria-label="Cairn home">
          <svg width="18" height="18" viewBox="0 0 16 16" aria-hidden="true">
            <path d="M3 14h10L8 2z" fill="#9fb3c8" />
          </svg>
          Cairn
        </NavLink>
        <nav className="nav" aria-label="Main">
          {NAV.map((n) => (
            <NavLink key={n.to} to={n.to} end={n.end}>
              {n.label}
            </NavLink>
          ))}
        </nav>
        {user && (
          <div className="sidebar__user">
            <div>
              <div>{user.name || user.email}</div>
              <Badge tone="neutral">
                <span className="sr-only">Role: </span>
                {user.role}
              </Badge>
            </div>
            <Button variant="ghost" size="small" busy={signOut.isPending} onClick={() => signOut.mutate()}>
              Sign out
            </Button>
          </div>
        )}
      </aside>
      <main id="main" className="main" tabIndex={-1}>
        <ErrorBoundary key={location.pathname}>
          <Outlet />
        </ErrorBoundary>
      </main>
    </div>
  );
}

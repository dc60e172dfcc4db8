import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useEffect } from 'react';
import { NavLink, Outlet, useLocation, useNavigate } from 'react-router';
import { logout } from '../api/endpoints';
import { hasRole, ME_KEY, useUser } from '../auth/auth';
import { Badge, Button, ErrorBoundary } from '../ui';

const NAV: { to: string; label: string; end?: boolean; admin?: boolean }[] = [
  { to: '/', label: 'Overview', end: true },
  { to: '/projects', label: 'Projects' },
  { to: '/runs', label: 'Runs' },
  { to: '/dead-letters', label: 'Dead letters' },
  { to: '/notifications', label: 'Notifications' },
  { to: '/schedules', label: 'Schedules' },
  { to: '/workflows', label: 'Workflows' },
  { to: '/workers', label: 'Workers' },
  { to: '/usage', label: 'Usage & cost' },
  { to: '/tokens', label: 'Tokens' },
  { to: '/users', label: 'Users & tokens', admin: true },
];

/**
 * On every move to another page, focus goes to its heading (once the page has drawn
 * it), so keyboard and screen-reader users start at the new content instead of at the
 * top of the document. Not when something inside the page took focus meanwhile, and
 * not for changes of the query string (filters).
 */
function useFocusHeadingOnNavigation(pathname: string) {
  useEffect(() => {
    const main = document.getElementById('main');
    if (!main) return;
    const focusHeading = (): boolean => {
      const active = document.activeElement;
      if (active && active !== document.body && active !== main && main.contains(active)) return true;
      const h1 = main.querySelector<HTMLElement>('h1');
      if (!h1) return false;
      if (!h1.hasAttribute('tabindex')) h1.setAttribute('tabindex', '-1');
      h1.focus({ preventScroll: false });
      return true;
    };
    if (focusHeading()) return;
    const observer = new MutationObserver(() => {
      if (focusHeading()) observer.disconnect();
    });
    observer.observe(main, { childList: true, subtree: true });
    const stop = setTimeout(() => observer.disconnect(), 10_000);
    return () => {
      observer.disconnect();
      clearTimeout(stop);
    };
  }, [pathname]);
}

export function AppShell() {
  const user = useUser();
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const location = useLocation();
  useFocusHeadingOnNavigation(location.pathname);
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
          {NAV.filter((n) => !n.admin || hasRole(user?.role, 'admin')).map((n) => (
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

import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useState, type FormEvent } from 'react';
import { Navigate, useNavigate, useSearchParams } from 'react-router';
import { ApiError } from '../api/client';
import { login } from '../api/endpoints';
import { ME_KEY, useMe } from '../auth/auth';
import { useTitle } from '../lib/useTitle';
import { Button, Field, InlineError, Loading } from '../ui';

/** Only same-app paths are followed after sign-in (no open redirects). */
export function safeNext(next: string | null): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/signin')) return '/';
  return next;
}

export function SignInPage() {
  useTitle('Sign in');
  const [params] = useSearchParams();
  const next = safeNext(params.get('next'));
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const meQuery = useMe();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const signIn = useMutation({
    mutationFn: () => login(email.trim(), password),
    onSuccess: (res) => {
      queryClient.setQueryData(ME_KEY, res.user);
      navigate(next, { replace: true });
    },
  });

  if (meQuery.isPending) return <Loading label="Checking your session…" />;
  if (meQuery.data && !signIn.isPending && !signIn.isSuccess) return <Navigate to={next} replace />;

  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    signIn.mutate();
  };
  const error = signIn.error;
  const wrongCredentials = error instanceof ApiError && (error.status === 401 || error.status === 403);

  return (
    <main className="signin">
      <div className="panel signin__card">
        <form onSubmit={onSubmit} aria-labelledby="signin-title" noValidate>
          <h1 id="signin-title">Sign in to Cairn</h1>
          <Field label="Email">
            {(p) => (
              <input
                {...p}
                className="input"
                type="email"
                name="email"
                autoComplete="username"
                required
                value={email}
                onChange={(e) => setEmail(e.target.value)}
              />
            )}
          </Field>
          <Field label="Password">
            {(p) => (
              <input
                {...p}
                className="input"
                type="password"
                name="password"
                autoComplete="current-password"
                required
                value={password}
                onChange={(e) => setPassword(e.target.value)}
              />
            )}
          </Field>
          {error &&
            (wrongCredentials ? (
              <div className="callout tone-danger" role="alert">
                That email and password do not match an account.
              </div>
            ) : (
              <InlineError error={error} />
            ))}
          <Button type="submit" variant="primary" busy={signIn.isPending} disabled={!email.trim() || !password}>
            Sign in
          </Button>
        </form>
      </div>
    </main>
  );
}

#!/bin/sh
# First start of the TimescaleDB container: roles and databases for tradeloom, MLflow and Airflow, with
# passwords read from the mounted docker secrets (never from this file).
set -eu
pw() { cat "/run/secrets/$1"; }
psql -v ON_ERROR_STOP=1 --username postgres --dbname tradeloom <<SQL
create role tradeloom_owner login createrole password '$(pw tradeloom_db_password)';
create role tradeloom_writer login password '$(pw tradeloom_db_password)';
create role tradeloom_executor login password '$(pw tradeloom_db_password)';
create role airflow login password '$(pw airflow_db_password)';
create role mlflow login password '$(pw mlflow_db_password)';
alter database tradeloom owner to tradeloom_owner;
create extension if not exists timescaledb;
create database airflow owner airflow;
create database mlflow owner mlflow;
SQL

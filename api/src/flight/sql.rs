//! Flight SQL over the engine's DataFusion session, read-only.
//!
//! Statements are parsed with DataFusion, and anything but a query (or `EXPLAIN` of one) is
//! rejected with `invalid_argument` naming the statement kind. Plans are also checked with
//! [`SQLOptions`] that allow no DDL, DML or statements. A statement ticket carries the SQL
//! text itself, so statement queries keep no state on the server. Prepared statements live
//! in memory until closed; their parameters are positional (`$1`, `$2`, ...), bound with one
//! row of values through `DoPut`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc,
    Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::datasource::TableType;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::error::{RequestError, RequestResult, stream_error};
use super::service::PUT_KINDS;
use crate::error::echoed;

/// The stream type of `DoGet` responses.
pub(crate) type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>;

/// Maximum number of prepared statements open at once, over all clients.
const MAX_PREPARED_STATEMENTS: usize = 4_096;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "bst");
    builder.append(SqlInfo::FlightSqlServerVersion, bst_engine::ENGINE_VERSION);
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    // The builder fails only when one id gets values of two types, and each id above is
    // appended once.
    builder.build().expect("static SQL info builds")
});

/// A prepared statement: its SQL and the parameter values bound last.
#[derive(Debug, Clone)]
struct PreparedStatement {
    sql: String,
    parameters: Vec<ScalarValue>,
}

/// The Flight SQL service over one DataFusion session.
#[derive(Clone)]
pub struct SqlService {
    ctx: SessionContext,
    prepared: Arc<Mutex<HashMap<u64, PreparedStatement>>>,
    next_handle: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlService")
            .field("session_id", &self.ctx.session_id())
            .field("prepared", &self.lock_prepared().len())
            .finish()
    }
}

impl SqlService {
    /// Creates the service over a session.
    pub fn new(ctx: SessionContext) -> Self {
        Self {
            ctx,
            prepared: Arc::new(Mutex::new(HashMap::new())),
            next_handle: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Plans a read-only query; see [`plan_query`].
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidArgument`] for invalid SQL or a statement that is not a query.
    pub async fn plan(&self, sql: &str) -> RequestResult<DataFrame> {
        plan_query(&self.ctx, sql).await
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PreparedStatement>> {
        // A panic while the lock is held leaves the map itself intact.
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn prepared_statement(&self, handle: &[u8]) -> RequestResult<PreparedStatement> {
        let id = parse_handle(handle)?;
        self.lock_prepared().get(&id).cloned().ok_or_else(|| {
            RequestError::NotFound(format!(
                "prepared statement {id} not found; it was closed or never created"
            ))
        })
    }

    async fn prepared_frame(&self, handle: &[u8]) -> RequestResult<DataFrame> {
        let statement = self.prepared_statement(handle)?;
        let frame = plan_query(&self.ctx, &statement.sql).await?;
        if statement.parameters.is_empty() {
            return Ok(frame);
        }
        let parameters = cast_parameters(&frame, statement.parameters)?;
        frame
            .with_param_values(parameters)
            .map_err(|error| RequestError::from_datafusion("binding parameters", error))
    }
}

/// Returns the options that let a plan read but never change anything.
fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Parses `sql`, rejects anything but a query, and plans it with read-only [`SQLOptions`].
///
/// # Errors
///
/// [`RequestError::InvalidArgument`] for invalid SQL or a statement that is not a query.
pub async fn plan_query(ctx: &SessionContext, sql: &str) -> RequestResult<DataFrame> {
    bst_engine::sql_limits::check_operator_count(sql)
        .map_err(|message| RequestError::InvalidArgument(format!("invalid SQL: {message}")))?;
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(|error| RequestError::InvalidArgument(error.strip_backtrace()))?;
    if let Some(kind) = statement_kind(&statement) {
        return Err(RequestError::InvalidArgument(format!(
            "{kind} statements are not allowed: the Flight SQL service is read-only and runs \
             only queries (SELECT, WITH, VALUES, EXPLAIN)"
        )));
    }
    ctx.sql_with_options(sql, read_only_options())
        .await
        .map_err(|error| RequestError::from_datafusion("query planning", error))
}

/// Returns the kind of a statement that is not a query, such as `CREATE TABLE`, or `None`
/// for a query.
fn statement_kind(statement: &DfStatement) -> Option<String> {
    match statement {
        DfStatement::Statement(inner) => match inner.as_ref() {
            SqlStatement::Query(_) => None,
            other => Some(leading_keywords(&other.to_string())),
        },
        DfStatement::Explain(explain) => statement_kind(&explain.statement),
        DfStatement::CopyTo(_) => Some("COPY".to_string()),
        DfStatement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE".to_string()),
        DfStatement::Reset(_) => Some("RESET".to_string()),
    }
}

/// Returns the keywords that name a statement's kind: the first word, and for `CREATE`,
/// `DROP` and `ALTER` also the object type (`CREATE OR REPLACE VIEW` is `CREATE VIEW`).
fn leading_keywords(statement: &str) -> String {
    const MODIFIERS: [&str; 9] = [
        "OR",
        "REPLACE",
        "TEMPORARY",
        "TEMP",
        "EXTERNAL",
        "UNIQUE",
        "IF",
        "NOT",
        "EXISTS",
    ];
    let mut words = statement.split_whitespace().map(str::to_uppercase);
    let Some(first) = words.next() else {
        return "empty".to_string();
    };
    if !["CREATE", "DROP", "ALTER"].contains(&first.as_str()) {
        return first;
    }
    match words.find(|word| !MODIFIERS.contains(&word.as_str())) {
        Some(object) => format!("{first} {object}"),
        None => first,
    }
}

fn parse_handle(handle: &[u8]) -> RequestResult<u64> {
    std::str::from_utf8(handle)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            RequestError::InvalidArgument(
                "invalid prepared statement handle: expected one returned by \
                 CreatePreparedStatement"
                    .to_string(),
            )
        })
}

/// Casts bound values to the types DataFusion inferred for `$1`, `$2`, ..., so that a client
/// that sends an integer for a float parameter still gets a plan.
fn cast_parameters(
    frame: &DataFrame,
    parameters: Vec<ScalarValue>,
) -> RequestResult<Vec<ScalarValue>> {
    let types = frame
        .logical_plan()
        .get_parameter_types()
        .map_err(|error| RequestError::from_datafusion("parameter types", error))?;
    parameters
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let name = format!("${}", index + 1);
            match types.get(&name) {
                Some(Some(data_type)) if value.data_type() != *data_type => {
                    value.cast_to(data_type).map_err(|error| {
                        RequestError::InvalidArgument(format!(
                            "invalid value for parameter {name}: cannot cast {value} to \
                             {data_type}: {}",
                            error.strip_backtrace()
                        ))
                    })
                }
                _ => Ok(value),
            }
        })
        .collect()
}

/// Returns the parameter schema of a plan: one nullable field per placeholder, `$1` first.
fn parameter_schema(frame: &DataFrame) -> RequestResult<Schema> {
    let types = frame
        .logical_plan()
        .get_parameter_types()
        .map_err(|error| RequestError::from_datafusion("parameter types", error))?;
    let mut names: Vec<&String> = types.keys().collect();
    names.sort_by_key(|name| {
        name.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let fields: Vec<Field> = names
        .into_iter()
        .map(|name| {
            let data_type = types[name].clone().unwrap_or(DataType::Null);
            Field::new(name, data_type, true)
        })
        .collect();
    Ok(Schema::new(fields))
}

fn schema_bytes(schema: &Schema) -> RequestResult<prost::bytes::Bytes> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|error| RequestError::internal("schema encoding", error))?;
    Ok(message.0)
}

/// Streams a DataFrame's result batch by batch through the Flight encoder.
///
/// Batches are relabeled with the logical plan's schema, the one `GetFlightInfo` returned,
/// because the physical plan may mark columns non-nullable where the logical plan does not,
/// and clients such as the ADBC driver reject a stream whose schema differs.
///
/// # Errors
///
/// Planning and execution errors of the DataFrame.
pub(crate) async fn stream_frame(frame: DataFrame) -> RequestResult<DoGetStream> {
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let stream = frame
        .execute_stream()
        .await
        .map_err(|error| RequestError::from_datafusion("query execution", error))?;
    let batch_schema = Arc::clone(&schema);
    let batches = stream.map(move |batch| {
        let batch = batch.map_err(|error| {
            stream_error(RequestError::from_datafusion("query execution", error))
        })?;
        RecordBatch::try_new(Arc::clone(&batch_schema), batch.columns().to_vec())
            .map_err(|error| stream_error(RequestError::internal("result schema", error)))
    });
    let flight_data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Ok(Box::pin(flight_data))
}

/// Streams batches that are already in memory.
pub(crate) fn stream_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> DoGetStream {
    let batches = futures::stream::iter(batches.into_iter().map(Ok::<_, FlightError>));
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    )
}

/// Returns a FlightInfo with one endpoint whose ticket is `ticket`.
fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|error| Status::from(RequestError::internal("schema encoding", error)))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn read_only_update(sql: &str) -> Status {
    let kind = statement_kind_of_text(sql);
    Status::invalid_argument(format!(
        "{kind} statements are not allowed: the Flight SQL service is read-only"
    ))
}

fn statement_kind_of_text(sql: &str) -> String {
    let words: String = sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
    leading_keywords(&words)
}

fn table_type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let frame = self.plan(&query.query).await?;
        let schema = frame.schema().as_arrow().clone();
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec()).map_err(|_| {
            Status::invalid_argument("invalid statement ticket: the SQL is not UTF-8")
        })?;
        let frame = self.plan(&sql).await?;
        Ok(Response::new(stream_frame(frame).await?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let frame = self
            .prepared_frame(&query.prepared_statement_handle)
            .await?;
        let schema = frame.schema().as_arrow().clone();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let frame = self
            .prepared_frame(&query.prepared_statement_handle)
            .await?;
        Ok(Response::new(stream_frame(frame).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let frame = self.plan(&query.query).await?;
        let dataset_schema = schema_bytes(&frame.schema().as_arrow().clone())?;
        let parameter_schema = schema_bytes(&parameter_schema(&frame)?)?;
        let id = self.next_handle.fetch_add(1, Ordering::Relaxed);
        {
            let mut prepared = self.lock_prepared();
            if prepared.len() >= MAX_PREPARED_STATEMENTS {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_PREPARED_STATEMENTS} prepared statements are open; close some first"
                )));
            }
            prepared.insert(
                id,
                PreparedStatement {
                    sql: query.query,
                    parameters: Vec::new(),
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: id.to_string().into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        let id = parse_handle(&query.prepared_statement_handle)?;
        self.lock_prepared().remove(&id);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = query.prepared_statement_handle;
        let id = parse_handle(&handle)?;
        self.prepared_statement(&handle)?;
        let flight_data = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(flight_data)
            .try_collect()
            .await
            .map_err(|error| {
                Status::invalid_argument(format!("invalid parameter batch: {error}"))
            })?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "{rows} parameter rows were bound; bind exactly one row of values"
            )));
        }
        let mut parameters = Vec::new();
        if let Some(batch) = batches.iter().find(|batch| batch.num_rows() == 1) {
            for (index, column) in batch.columns().iter().enumerate() {
                let value = ScalarValue::try_from_array(column, 0).map_err(|error| {
                    Status::invalid_argument(format!(
                        "invalid value for parameter ${}: {}",
                        index + 1,
                        error.strip_backtrace()
                    ))
                })?;
                parameters.push(value);
            }
        }
        if let Some(statement) = self.lock_prepared().get_mut(&id) {
            statement.parameters = parameters;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::invalid_argument(format!(
            "ingest into {} is not allowed: the Flight SQL service is read-only",
            echoed(&command.table)
        )))
    }

    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        // A PATH descriptor leaves the command empty, so its `Any` has no type.
        if message.type_url.is_empty() {
            return Err(Status::invalid_argument(format!(
                "invalid DoPut descriptor: {PUT_KINDS}"
            )));
        }
        Err(Status::invalid_argument(format!(
            "invalid DoPut descriptor: the command type {} is not accepted; {PUT_KINDS}",
            echoed(&message.type_url)
        )))
    }

    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::invalid_argument(format!(
            "invalid DoPut request: {error} {PUT_KINDS}"
        )))
    }

    async fn do_put_statement_update(
        &self,
        query: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only_update(&query.query))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let statement = self.prepared_statement(&query.prepared_statement_handle)?;
        Err(read_only_update(&statement.sql))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for catalog in self.ctx.catalog_names() {
            builder.append(catalog);
        }
        let schema = builder.schema();
        let batch = builder.build().map_err(Status::from)?;
        Ok(Response::new(stream_batches(schema, vec![batch])))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                builder.append(&catalog_name, schema_name);
            }
        }
        let schema = builder.schema();
        let batch = builder.build().map_err(Status::from)?;
        Ok(Response::new(stream_batches(schema, vec![batch])))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let table = schema.table(&table_name).await.map_err(|error| {
                        Status::from(RequestError::from_datafusion("table lookup", error))
                    })?;
                    let Some(table) = table else {
                        continue;
                    };
                    builder
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            table_type_name(table.table_type()),
                            table.schema().as_ref(),
                        )
                        .map_err(Status::from)?;
                }
            }
        }
        let schema = builder.schema();
        let batch = builder.build().map_err(Status::from)?;
        Ok(Response::new(stream_batches(schema, vec![batch])))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for table_type in [TableType::Base, TableType::View, TableType::Temporary] {
            builder.append(table_type_name(table_type));
        }
        let schema = builder.schema();
        let batch = builder.build().map_err(Status::from)?;
        Ok(Response::new(stream_batches(schema, vec![batch])))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        let batch = builder.build().map_err(Status::from)?;
        Ok(Response::new(stream_batches(schema, vec![batch])))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Returns the statement kind that [`plan_query`] names when it rejects `sql`, or `None`
/// for a query. Used by the tests.
#[cfg(test)]
fn rejected_kind(sql: &str) -> Option<String> {
    let ctx = SessionContext::new();
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).ok()?;
    statement_kind(&statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_kinds_are_named() {
        let cases = [
            ("SELECT 1", None),
            ("WITH t AS (SELECT 1) SELECT * FROM t", None),
            ("EXPLAIN SELECT 1", None),
            ("CREATE TABLE t (a INT)", Some("CREATE TABLE")),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", Some("CREATE VIEW")),
            ("DROP VIEW v", Some("DROP VIEW")),
            ("INSERT INTO t VALUES (1)", Some("INSERT")),
            ("COPY (SELECT 1) TO '/tmp/x.parquet'", Some("COPY")),
            ("SET datafusion.execution.batch_size = 1", Some("SET")),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/tmp'",
                Some("CREATE EXTERNAL TABLE"),
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(rejected_kind(sql).as_deref(), expected, "{sql}");
        }
    }
}
